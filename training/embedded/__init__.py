"""zest-tiny's training side: procedural scenes (`scenes`), the trainer (`train`, `zest train-embedded`)
and the zero-shot evaluator (`evaluate`, `zest eval-embedded`). The model itself is zest.models.embedded."""
