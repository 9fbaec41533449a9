"""`zest eval`: how well does the zero-shot classifier (or an adapted head) do on a labelled folder?

In process (`evaluate_folder`): image features come from the feature cache or the encoder; every shipped
template set is scored on the same features (only the class texts are encoded per set), so "which set is
best here" costs no extra image encoding. Against a running server (`evaluate_url`): the folder's
readable images are sent to `POST /classify` in batches, once per template set, and the server's own
answers are scored -- what a deployed model does, preprocessing included.

Both give the same report (see `build_report`): top-1/top-5, balanced accuracy, per-class
precision/recall/support, the confusion matrix, the most frequent confusions, every image's top-3 and
the unreadable files that were skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ...models.errors import InvalidInput
from ...models.heads import Head
from ...models.zero_shot import scoring_of, softmax
from ...models.zero_shot import zero_shot_probs as model_probs
from ...prompts import list_template_sets, load_template_set
from .data import ClassInfo, ImageFolder
from .features import FeatureCache, FolderFeatures, Skipped, folder_features, progress_bar, read_folder
from .metrics import calibration, ranking, summarize
from .report import draw_confusion, draw_reliability, failure_sheet

# ------------------------------------------------------------------------------------------- class texts

def class_texts(classes: Sequence[ClassInfo], templates: Sequence[str]) -> list[list[str]]:
    """Each class's texts: its own prompts from classes.yaml, else every template filled with its name."""
    return [list(c.prompts) if c.prompts else [t.format(c.name) for t in templates] for c in classes]


class TextEmbeddings:
    """Class embeddings from texts (mean of unit-norm text features, re-normalised -- the CLIP paper's
    prompt ensembling); a text shared by several template sets is encoded once."""

    def __init__(self, encode_texts: Callable[[list[str]], np.ndarray]):
        self.encode_texts = encode_texts
        self._seen: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str]) -> None:
        new = list(dict.fromkeys(t for t in texts if t not in self._seen))
        if new:
            for t, f in zip(new, np.asarray(self.encode_texts(new), dtype=np.float32)):
                self._seen[t] = f

    def class_embeddings(self, groups: Sequence[Sequence[str]]) -> np.ndarray:
        self.encode([t for g in groups for t in g])
        means = np.stack([np.mean([self._seen[t] for t in g], axis=0) for g in groups])
        return (means / np.linalg.norm(means, axis=1, keepdims=True)).astype(np.float32)


def zero_shot_probs(features: np.ndarray, class_emb: np.ndarray, logit_scale: float,
                    logit_bias: float | None = None) -> np.ndarray:
    """The model's own probabilities: softmax, or per-label sigmoid for a model with a logit bias (SigLIP)."""
    if logit_bias is not None:
        return model_probs(features, class_emb, logit_scale, logit_bias).astype(np.float64)
    return softmax(logit_scale * (features.astype(np.float64) @ class_emb.T.astype(np.float64)))


# ------------------------------------------------------------------------------------------- the report

def build_report(folder: ImageFolder, classes: Sequence[str], probs: np.ndarray, labels: np.ndarray,
                 indices: np.ndarray, skipped: Sequence[Skipped], **info) -> dict:
    """The `zest eval` report for per-image class probabilities `probs` (rows follow `indices`)."""
    probs = np.asarray(probs, dtype=np.float64)
    s = summarize(probs, labels, classes)
    order = ranking(probs)[:, :3] if len(probs) else np.zeros((0, 3), np.int64)
    predictions = [{"path": folder.rel(folder.images[i].path), "true": classes[y],
                    "top3": [[classes[j], float(p[j])] for j in o]}
                   for i, y, p, o in zip(indices, labels, probs, order)]
    m = np.asarray(s["confusion"])
    off = [(int(m[a, b]), classes[a], classes[b]) for a, b in zip(*np.nonzero(m)) if a != b]
    confusions = [{"true": t, "predicted": p, "count": c} for c, t, p in sorted(off, key=lambda x: (-x[0], x[1], x[2]))]
    return {"dir": str(folder.root), **info, "n_classes": len(classes), "classes": list(classes),
            "n_images": s["n_images"], "top1": s["top1"], "top5": s["top5"],
            "balanced_accuracy": s["balanced_accuracy"], "calibration": calibration(probs, labels),
            "per_class": s["per_class"], "confusion": s["confusion"], "confusions": confusions, "skipped": [{"path": x.path, "reason": x.reason} for x in skipped],
            "predictions": predictions}


def write_outputs(report: dict, folder: ImageFolder, out_dir: str | Path, n_failures: int = 48) -> dict:
    """report.json, confusion.png and failures.html under `out_dir`; returns their paths (also in report)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    how = f"head {report['head']}" if report.get("head") else f"templates {report['templates']}"
    title = f"{report['model']} on {folder.root.name} ({how})"
    conf = draw_confusion(report["confusion"], report["classes"], out / "confusion.png",
                          title=f"{title}: top-1 {report['top1'] or 0:.1%}")
    reliability = draw_reliability(report["calibration"], out / "reliability.png",
                                   title=f"{title}: {report.get('scoring', 'softmax')} probabilities")
    wrong = [p for p in report["predictions"] if p["top3"] and p["top3"][0][0] != p["true"]]
    wrong.sort(key=lambda p: (-p["top3"][0][1], p["path"]))
    shown = [{**p, "data": (folder.root / p["path"]).read_bytes()} for p in wrong[:n_failures]]
    fail = failure_sheet(shown, out / "failures.html", f"Failures: {title}", len(wrong), report["n_images"])
    files = {"report_json": str(out / "report.json"), "confusion_png": str(conf),
             "reliability_png": str(reliability), "failures_html": str(fail)}
    report["files"] = files
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return files


# ------------------------------------------------------------------------------------------- in process

def head_labels(folder: ImageFolder, head: Head) -> np.ndarray:
    """Folder class -> index among the head's classes; InvalidInput if the head lacks a folder class."""
    missing = [n for n in folder.names if n not in head.classes]
    if missing:
        raise InvalidInput(f"head {head.name!r} has no class {', '.join(map(repr, missing))} "
                           f"(its classes: {', '.join(head.classes)})")
    return np.array([head.classes.index(n) for n in folder.names], dtype=np.int64)


def template_comparison(texts: TextEmbeddings, classes: Sequence[ClassInfo], feats: FolderFeatures,
                        logit_scale: float) -> list[dict]:
    rows = []
    for ts in list_template_sets():
        s = summarize(zero_shot_probs(feats.features, texts.class_embeddings(class_texts(classes, ts.templates)),
                                      logit_scale), feats.labels, [c.name for c in classes])
        rows.append({"name": ts.name, "count": len(ts.templates), "top1": s["top1"], "top5": s["top5"]})
    return rows


def best_set(rows: Sequence[dict]) -> str | None:
    """Highest top-1, then top-5; ties go to the set with fewer templates (cheaper to encode)."""
    scored = [r for r in rows if r["top1"] is not None]
    if not scored:
        return None
    return max(scored, key=lambda r: (r["top1"], r["top5"], -r["count"]))["name"]


def evaluate_folder(folder: ImageFolder, encoder, templates: str = "imagenet-simple", head: Head | None = None,
                    compare: bool = True, cache: FeatureCache | None = None, progress: bool | None = None,
                    batch_size: int = 32) -> dict:
    """Evaluate `encoder` zero-shot with `templates` (or `head`) on `folder`; see build_report."""
    template_set = load_template_set(templates)
    if head is not None:
        head.check_model(encoder.model_id, encoder.dim)
    feats = folder_features(folder, encoder, cache=cache, batch_size=batch_size, progress=progress)
    texts = TextEmbeddings(encoder.encode_texts)
    info = {"model": encoder.model_id, "mode": "in-process", "templates": template_set.name,
            "scoring": "softmax" if head is not None else scoring_of(getattr(encoder, "logit_bias", None)),
            "head": head.name if head else None, "encoded_images": feats.encoded}
    rows = template_comparison(texts, folder.classes, feats, encoder.logit_scale) if compare else []
    info |= {"template_sets": rows, "best_template_set": best_set(rows)}
    if head is None:
        classes = folder.names
        emb = texts.class_embeddings(class_texts(folder.classes, template_set.templates))
        probs = zero_shot_probs(feats.features, emb, encoder.logit_scale, getattr(encoder, "logit_bias", None))
        labels, indices = feats.labels, feats.indices
    else:
        classes = list(head.classes)
        trained = set(head.meta.get("train_images", ()))
        keep = np.array([d not in trained for d in feats.digests], dtype=bool)
        info["excluded_training_images"] = int((~keep).sum())
        if not keep.any():
            raise InvalidInput(f"every image in {folder.root} was used to fit head {head.name!r} (`zest adapt` refits "
                               "on all labelled images): evaluate it on other images, or adapt with --no-refit to "
                               "keep its held-out part unseen")
        labels = head_labels(folder, head)[feats.labels[keep]]
        probs, indices = head.probabilities(feats.features[keep]), feats.indices[keep]
    return build_report(folder, classes, probs, labels, indices, feats.skipped, **info)


# ------------------------------------------------------------------------------------------- a server

class Remote:
    """POST /classify against a running zest server (httpx), in batches it accepts."""

    def __init__(self, url: str, batch_size: int = 16, timeout: float = 300.0):
        import httpx

        self.url = url.rstrip("/")
        self.batch_size = max(1, batch_size)
        self.scoring = "softmax"  # what the server's /classify says its probabilities are
        self.client = httpx.Client(timeout=timeout)

    def _error(self, r) -> str:
        try:
            return r.json().get("error", r.text)
        except ValueError:
            return r.text[:500]

    def head(self, name: str) -> dict:
        r = self.client.get(f"{self.url}/heads")
        if r.status_code != 200:
            raise InvalidInput(f"{self.url}/heads answered {r.status_code}: {self._error(r)}")
        for h in r.json()["heads"]:
            if h["name"] == name:
                return h
        raise InvalidInput(f"the server at {self.url} has no head {name!r} (GET /heads)")

    def classify(self, items: Sequence[tuple[str, bytes]], fields: dict, n_classes: int, classes: Sequence[str],
                 bar=None) -> tuple[np.ndarray, str]:
        """(probabilities (n, C) in `classes` order, model id); halves the batch when the server says 413."""
        probs = np.zeros((len(items), n_classes))
        model, i, size = "", 0, self.batch_size
        index = {c: k for k, c in enumerate(classes)}
        while i < len(items):
            batch = items[i:i + size]
            files = [("images", (name, data, "application/octet-stream")) for name, data in batch]
            r = self.client.post(f"{self.url}/classify", files=files, data={**fields, "top_k": str(n_classes)})
            if r.status_code == 413 and size > 1 and "images" in self._error(r):
                size = max(1, size // 2)
                continue
            if r.status_code != 200:
                raise InvalidInput(f"{self.url}/classify answered {r.status_code}: {self._error(r)}")
            body = r.json()
            model, self.scoring = body["model"], body.get("scoring", "softmax")
            for row, res in zip(probs[i:i + len(batch)], body["results"]):
                for p in res["predictions"]:
                    row[index[p["label"]]] = p["probability"]
            i += len(batch)
            if bar is not None:
                bar.update(len(batch))
        return probs, model


def evaluate_url(folder: ImageFolder, url: str, templates: str = "imagenet-simple", head: str | None = None,
                 compare: bool = True, progress: bool | None = None, batch_size: int = 16) -> dict:
    """Evaluate the server at `url` on `folder` through POST /classify (see the module docstring)."""
    remote = Remote(url, batch_size=batch_size)
    skipped: list[Skipped] = []
    read = list(read_folder(folder, skipped=skipped))
    items = [(folder.rel(folder.images[r.index].path), r.data) for r in read]
    indices = np.array([r.index for r in read], dtype=np.int64)
    folder_labels = np.array([folder.images[r.index].label for r in read], dtype=np.int64)
    prompted = [c.name for c in folder.classes if c.prompts]
    info: dict = {"mode": "url", "url": url, "head": head, "templates": None if head else templates}
    if prompted:
        info["warning"] = (f"classes.yaml prompts cannot be sent to /classify; the class names were used for "
                           f"{', '.join(prompted)}")
    names = folder.names

    def run(fields: dict, classes: Sequence[str], desc: str) -> tuple[np.ndarray, str]:
        with progress_bar(len(items), desc, progress) as bar:
            return remote.classify(items, fields, len(classes), classes, bar)

    if head is not None:
        h = remote.head(head)
        classes = h["classes"]
        missing = [n for n in names if n not in classes]
        if missing:
            raise InvalidInput(f"head {head!r} has no class {', '.join(map(repr, missing))}")
        probs, model = run({"head": head}, classes, f"classifying with head {head}")
        labels = np.array([classes.index(names[y]) for y in folder_labels], dtype=np.int64)
        info |= {"template_sets": [], "best_template_set": None}
    else:
        load_template_set(templates)  # a clear error for an unknown name, before any request
        classes, labels = names, folder_labels
        label_field = json.dumps(names)
        probs, model = run({"labels": label_field, "templates": templates}, names, f"classifying ({templates})")
        rows = []
        for ts in (list_template_sets() if compare else []):
            p = probs if ts.name == templates else run({"labels": label_field, "templates": ts.name}, names,
                                                       f"comparing ({ts.name})")[0]
            s = summarize(p, labels, names)
            rows.append({"name": ts.name, "count": len(ts.templates), "top1": s["top1"], "top5": s["top5"]})
        info |= {"template_sets": rows, "best_template_set": best_set(rows)}
    return build_report(folder, classes, probs, labels, indices, skipped, model=model or "unknown",
                        scoring=remote.scoring, **info)
