"""Trained models from the Hugging Face Hub: ``--model owner/name[@revision]``.

Only the two files of a model folder are fetched (``model.json``, ``model.safetensors``), with
huggingface_hub into its cache; later runs read the cache, and with ``HF_HUB_OFFLINE=1`` never
touch the network. Weights are read with safetensors only: nothing in a repository can run code.
"""

from __future__ import annotations

from pathlib import Path

from saliency.core.errors import ConfigError, UserError


def download_model(repo: str, revision: str | None = None) -> Path:
    """The snapshot folder holding the repository's model.json and model.safetensors."""
    from saliency.unet import MODEL_META, MODEL_WEIGHTS

    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                            RevisionNotFoundError)
    except ImportError as exc:  # pragma: no cover - an install dependency
        raise UserError("a Hub model id needs huggingface_hub: pip install huggingface_hub") from exc
    where = f"{repo}@{revision}" if revision else repo
    folders = set()
    for name in (MODEL_META, MODEL_WEIGHTS):
        try:
            folders.add(Path(hf_hub_download(repo, name, revision=revision)).parent)
        except LocalEntryNotFoundError as exc:
            raise ConfigError(f"`model` {where}: not a folder here, and not in huggingface_hub's cache while offline "
                            "(HF_HUB_OFFLINE=1 or no network); fetch it once with a network") from exc
        except RevisionNotFoundError as exc:
            raise ConfigError(f"`model` {where}: the Hub repository has no revision {revision!r}") from exc
        except RepositoryNotFoundError as exc:
            raise ConfigError(f"`model` {where}: not a folder here, and no such repository on the Hub "
                            "(or it is private: log in with `hf auth login`)") from exc
        except EntryNotFoundError as exc:
            raise ConfigError(f"`model` {where}: the repository has no {name}; it is not a model of this tool") from exc
        except (OSError, ValueError) as exc:  # network errors, a full disk, a bad id
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"`model` {where}: cannot fetch {name} from the Hub ({first})") from exc
    if len(folders) != 1:
        raise ConfigError(f"`model` {where}: the repository changed while its files were fetched; run again")
    return folders.pop()
