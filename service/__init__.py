"""zest's REST service (BentoML), its settings and its command line."""
