"""Models on the Hugging Face Hub, named `owner/name[@revision]`: their BERT files downloaded into huggingface_hub's
cache, or found there offline, as a local Hugging Face directory.
"""

import os
import re

import httpx2
import huggingface_hub
import huggingface_hub.errors
from absl import logging

import errors
import files
import huggingface

# KR-BERT character on the Hugging Face Hub: the training scripts' default weights.
KR_BERT_HUB_ID = "snunlp/KR-BERT-char16424"
# A Hugging Face Hub model, optionally at a revision (branch, tag or commit): "klue/bert-base", "klue/bert-base@main".
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+(@[\w./-]+)?")
# What a BERT directory needs from the Hub, each file or its alternative; without a tokenizer config,
# do_lower_case must be given.
HUB_FILES = (
    (huggingface.CONFIG_FILE,),
    (huggingface.WEIGHTS_FILE, huggingface.PYTORCH_WEIGHTS_FILE),
    (huggingface.VOCAB_FILE,),
    (huggingface.TOKENIZER_CONFIG_FILE,),
)
# The do_lower_case of Hub models whose authors state it in their README, used when it is not given, whatever the
# repository's tokenizer_config.json says or whether it has one (without one, transformers' BertTokenizer
# lower-cases): KR-BERT character loads its vocab with do_lower_case=False, as lower-casing's NFD would split every
# Hangul syllable into jamo.
HUB_LOWER_CASE = {KR_BERT_HUB_ID: False}


def is_hub_id(weights):
    """Whether `weights` names a Hub model: an `owner/name[@revision]` that is no local path or checkpoint prefix,
    nor meant as one: a path that starts with ./ or ../, or whose first component is a local directory (a mistyped
    `KR-BERT-char16424/model.ckpt-200000`), is a local path that is not found, not a Hub model to download."""
    if not weights or HUB_ID.fullmatch(weights) is None or weights.startswith(("./", "../")):
        return False
    if files.isdir(weights.split("/", 1)[0]):
        return False
    return not files.exists_as_path_or_prefix(weights)


def download_from_hub(hub_id):
    """The local directory of a Hub model's BERT files (`HUB_FILES`), downloaded into huggingface_hub's cache or
    found there: with HF_HUB_OFFLINE=1 only the cache is read, as huggingface_hub does. HF_ENDPOINT names another
    Hub; HF_HOME or HF_HUB_CACHE another cache."""
    repo_id, _, revision = hub_id.partition("@")
    # A download cut off leaves nothing in the cache: huggingface_hub writes each file under a temporary name.
    paths = [download_hub_file(hub_id, repo_id, revision or None, names) for names in HUB_FILES]
    directory = os.path.dirname(paths[0])  # config.json's: it is never absent (download_hub_file)
    logging.info("%s: %s", hub_id, directory)
    return directory


def download_hub_file(hub_id, repo_id, revision, names):
    """The cached path of one file of a Hub model, the first of `names` (alternatives) it has; None for a
    tokenizer config the model has not."""
    offline = False
    for name in names:
        try:
            return huggingface_hub.hf_hub_download(repo_id, name, revision=revision)
        except huggingface_hub.errors.RemoteEntryNotFoundError:
            continue
        except huggingface_hub.errors.LocalEntryNotFoundError:
            offline = True  # the Hub not reached (HF_HUB_OFFLINE or no network), and the file not in the cache
        except huggingface_hub.errors.RevisionNotFoundError:
            raise errors.CheckpointError(f"the Hugging Face Hub has no revision {revision} of {repo_id}") from None
        except huggingface_hub.errors.RepositoryNotFoundError:
            raise errors.CheckpointError(
                f"{hub_id} is neither a local path nor a model on the Hugging Face Hub"
            ) from None
        except (OSError, huggingface_hub.errors.HfHubHTTPError, httpx2.HTTPError) as error:
            # httpx2 (huggingface_hub's HTTP client): a connection refused, cut off or timed out.
            raise errors.CheckpointError(
                f"{hub_id} is no local path, and as a Hub model its {name} could not be downloaded: "
                f"{errors.one_line(error)}"
            ) from None
    if names == (huggingface.TOKENIZER_CONFIG_FILE,):
        return None  # offline too: the files are fetched together, so a cached model without one has none
    wanted = " or ".join(names)
    if offline:
        raise errors.CheckpointError(
            f"{hub_id} is no local path, and as a Hub model its {wanted} is not in the Hugging Face cache while the "
            "Hub cannot be reached (HF_HUB_OFFLINE or no network): connect this machine once, or give a local directory"
        )
    raise errors.CheckpointError(f"{hub_id} has no {wanted} on the Hugging Face Hub")
