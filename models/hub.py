"""Files of a model repository on a Hugging Face hub, or from its local cache.

`hub_file` is the one place zest asks a hub for anything. It asks once, without retries: a hub that
answers decides (download, or a clear "no such repository"); a hub that cannot be reached falls back to
the local cache (HF_HOME / HF_HUB_CACHE), and if the file is not cached either, fails at once with one
`ModelLoadError` that names the spec and what to pass instead. (huggingface_hub's own `hf_hub_download`
retries an unreachable hub with back-off for about half a minute per file before giving up; open_clip
then tries a second file name the same way. Asking first keeps an offline start-up failure fast.)

The endpoint is huggingface_hub's: HF_ENDPOINT (default https://huggingface.co). The wait for a hub
that does not answer is HF_HUB_ETAG_TIMEOUT seconds (default 10); a download's read timeout is
HF_HUB_DOWNLOAD_TIMEOUT. HF_HUB_OFFLINE=1 means: the cache only, never the network.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .errors import ModelLoadError

log = logging.getLogger(__name__)

OFFLINE_HINT = (
    "the weights are not in the local cache and the model hub cannot be reached. On a machine without "
    "network, pass a local checkpoint directory (local-dir:/path holding open_clip_config.json and weights), "
    "an ARCH/path/to/weights file, a BentoML model tag stored with `zest models import` (NAME:VERSION), "
    "or fill the Hugging Face cache (HF_HOME) on a machine that has network"
)
NOT_FOUND_HINT = (
    "check the repository name (hf-hub:ORG/NAME), log in (HF_TOKEN) if it is private or gated, or pass a "
    "local checkpoint directory (local-dir:/path) or a BentoML model tag stored with `zest models import`"
)


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _cached(repo_id: str, filename: str, revision: str | None) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, revision=revision)
    return found if isinstance(found, str) else None


def _from_cache(spec_id: str, repo_id: str, filenames: Sequence[str], revision: str | None,
                reason: str) -> str:
    for filename in filenames:
        path = _cached(repo_id, filename, revision)
        if path is not None:
            log.info("model %s: %s; using the cached %s/%s", spec_id, reason, repo_id, filename)
            return path
    raise ModelLoadError(f"cannot load model '{spec_id}': {OFFLINE_HINT}. (hub {endpoint()}: {reason}; "
                         f"no cached {' or '.join(filenames)} of {repo_id})")


def hub_file(spec_id: str, repo_id: str, filenames: Sequence[str], revision: str | None = None) -> str:
    """Local path of the first of `filenames` (alternatives, best first) that repository `repo_id` has,
    downloaded into the Hugging Face cache if the hub has it and the cache does not.

    Raises `ModelLoadError` naming `spec_id` if the repository does not exist (and nothing is cached),
    has none of the files, or the hub cannot be reached and nothing is cached.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.utils import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    if constants.HF_HUB_OFFLINE:
        return _from_cache(spec_id, repo_id, filenames, revision, "HF_HUB_OFFLINE is set")
    for filename in filenames:
        url = hf_hub_url(repo_id, filename, revision=revision)
        try:
            # One HEAD request, no retries (huggingface_hub's default for this call).
            get_hf_file_metadata(url, timeout=constants.HF_HUB_ETAG_TIMEOUT)
        except EntryNotFoundError:
            continue  # the repository exists but lacks this file: try the next name
        except RevisionNotFoundError as exc:
            raise ModelLoadError(f"cannot load model '{spec_id}': the hub at {endpoint()} has no revision "
                                 f"{revision or 'main'} of {repo_id} ({_first_line(exc)})") from None
        except RepositoryNotFoundError:
            # huggingface_hub itself serves a cached copy here too (401 for a private repo looks the same)
            try:
                return _from_cache(spec_id, repo_id, filenames, revision, "repository not found")
            except ModelLoadError:
                pass
            raise ModelLoadError(f"cannot load model '{spec_id}': the hub at {endpoint()} has no repository "
                                 f"{repo_id!r}; {NOT_FOUND_HINT}") from None
        except HfHubHTTPError as exc:  # 5xx, 429, ...: the hub is there but not serving
            return _from_cache(spec_id, repo_id, filenames, revision, _first_line(exc))
        except Exception as exc:  # noqa: BLE001 - connection refused, DNS, timeout, proxy, TLS, offline mode
            return _from_cache(spec_id, repo_id, filenames, revision, f"{type(exc).__name__}: {_first_line(exc)}")
        try:
            return hf_hub_download(repo_id, filename, revision=revision)
        except Exception as exc:  # the hub answered the HEAD, then failed the download
            raise ModelLoadError(f"cannot load model '{spec_id}': downloading {repo_id}/{filename} from "
                                 f"{endpoint()} failed: {type(exc).__name__}: {_first_line(exc)}") from exc
    raise ModelLoadError(f"cannot load model '{spec_id}': repository {repo_id} on {endpoint()} has none of "
                         f"{', '.join(filenames)}")


def hub_directory(spec_id: str, repo_id: str, required: Sequence[str], optional: Sequence[str] = (),
                  revision: str | None = None) -> str:
    """The snapshot directory of `repo_id` holding the first of `required` it has and every other one of
    `required` and `optional` it has (downloaded, or from the cache when the hub cannot be reached): a tokenizer's files, which
    `from_pretrained(directory)` then reads with no network. `ModelLoadError` as `hub_file`."""
    from pathlib import Path

    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError

    first = Path(hub_file(spec_id, repo_id, required, revision))
    directory = first.parent
    online = not constants.HF_HUB_OFFLINE and _answers(repo_id, first.name, revision)
    for filename in [f for f in (*required, *optional) if f != first.name]:
        if online:
            try:
                path: str | None = hf_hub_download(repo_id, filename, revision=revision)
            except EntryNotFoundError:
                continue
            except Exception as exc:  # the hub answered a moment ago and now fails
                raise ModelLoadError(f"cannot load model '{spec_id}': downloading {repo_id}/{filename} from "
                                     f"{endpoint()} failed: {type(exc).__name__}: {_first_line(exc)}") from exc
        else:
            path = _cached(repo_id, filename, revision)
        if path is not None and Path(path).parent != directory:
            raise ModelLoadError(f"cannot load model '{spec_id}': the cached files of {repo_id} come from different "
                                 f"revisions ({directory.name}, {Path(path).parent.name}); download it again")
    return str(directory)


def _answers(repo_id: str, filename: str, revision: str | None) -> bool:
    """Whether the hub answers a HEAD for a file it has (one request, no retries)."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url

    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision), timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except Exception:  # noqa: BLE001 - unreachable, or not serving: the cache decides
        return False
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
