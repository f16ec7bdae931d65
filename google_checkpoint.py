"""Google-format BERT checkpoints (google-research/bert's, KR-BERT's release, the ones training saves): the shapes
a config's weights must have, and checkpoints found, checked, read into a `model.BertEncoder` and written from one
by the weights' Google names (`BertEncoder.checkpoint_variables()`).
"""

import os

import tensorflow as tf

import errors
import files


def checkpoint_shapes(config):
    """{Google checkpoint name: shape} of every weight `BertEncoder(config)` has (its `checkpoint_variables()`),
    known before anything is built: files are checked against it first."""
    h, i = config.hidden_size, config.intermediate_size
    shapes = {
        "bert/embeddings/word_embeddings": (config.vocab_size, h),
        "bert/embeddings/token_type_embeddings": (config.type_vocab_size, h),
        "bert/embeddings/position_embeddings": (config.max_position_embeddings, h),
        "bert/embeddings/LayerNorm/gamma": (h,),
        "bert/embeddings/LayerNorm/beta": (h,),
    }
    for index in range(config.num_hidden_layers):
        prefix = f"bert/encoder/layer_{index}"
        for name, kernel in {
            "attention/self/query": (h, h),
            "attention/self/key": (h, h),
            "attention/self/value": (h, h),
            "attention/output/dense": (h, h),
            "intermediate/dense": (h, i),
            "output/dense": (i, h),
        }.items():
            shapes[f"{prefix}/{name}/kernel"] = kernel
            shapes[f"{prefix}/{name}/bias"] = kernel[1:]
        for name in ("attention/output/LayerNorm", "output/LayerNorm"):
            shapes[f"{prefix}/{name}/gamma"] = (h,)
            shapes[f"{prefix}/{name}/beta"] = (h,)
    shapes["bert/pooler/dense/kernel"] = (h, h)
    shapes["bert/pooler/dense/bias"] = (h,)
    return shapes


def resolve_checkpoint(path):
    """The checkpoint prefix for `path`: a prefix itself, or a directory with a `checkpoint` state file."""
    if files.isdir(path):
        prefix = tf.train.latest_checkpoint(path)
        if prefix is None:
            raise errors.CheckpointError(f"{path} is a directory with no TensorFlow checkpoint in it")
        return prefix
    if not files.exists(f"{path}.index"):
        raise errors.CheckpointError(f"checkpoint not found: {path} (expected {path}.index and its data files)")
    return path


def open_checkpoint(path, config):
    """(prefix, reader) of the Google-format checkpoint at `path`, checked to hold every weight `config` makes
    (`checkpoint_shapes`) in its shape, before a model is built; `CheckpointError` names the first missing variable
    or shape mismatch."""
    prefix = resolve_checkpoint(path)
    try:
        reader = tf.compat.v1.train.NewCheckpointReader(prefix)  # the prefix as it is: ram:// would call it a directory
    except (tf.errors.OpError, ValueError) as error:
        raise errors.CheckpointError(
            f"{prefix} is not a readable TensorFlow checkpoint: {errors.one_line(error)}"
        ) from None
    shapes = reader.get_variable_to_shape_map()
    for name, shape in checkpoint_shapes(config).items():
        if name not in shapes:
            raise errors.CheckpointError(f"checkpoint {prefix} has no variable {name}")
        if tuple(shapes[name]) != shape:
            raise errors.CheckpointError(
                f"checkpoint {prefix} has {name} of shape {list(shapes[name])}, the config makes it {list(shape)}"
            )
    return prefix, reader


def load_checkpoint(encoder, path):
    """Loads a Google-format BERT checkpoint (KR-BERT's release or one of ours) into `encoder`.

    Only the encoder's own variables are read, so optimizer slots (adam_m, adam_v), global_step and the
    `cls/` pretraining heads are skipped; what is missing or of another shape is named (`open_checkpoint`).
    """
    prefix, reader = open_checkpoint(path, encoder.config)
    for name, variable in encoder.checkpoint_variables().items():
        try:
            tensor = reader.get_tensor(name)
        except (tf.errors.OpError, IndexError, ValueError) as error:  # IndexError: a data file cut short
            raise errors.CheckpointError(
                f"checkpoint {prefix} cannot be read at {name}: {errors.one_line(error)}"
            ) from None
        variable.assign(tensor)
    return prefix


def save_checkpoint(encoder, prefix):
    """Writes the encoder as a Google-format checkpoint at `prefix` (`prefix.index`, `prefix.data-*`).

    It is written under a temporary prefix and renamed into place, index last, so an interrupted save
    never leaves a half-written checkpoint under `prefix`.
    """
    variables = encoder.checkpoint_variables()
    names = sorted(variables)
    temporary = f"{prefix}{files.TEMPORARY_SUFFIX}{os.getpid()}"
    tf.raw_ops.SaveV2(
        prefix=temporary,
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.convert_to_tensor(variables[name]) for name in names],
    )
    data_files = files.glob(f"{temporary}.data-*")
    for source in data_files + [f"{temporary}.index"]:
        files.rename(source, prefix + source[len(temporary) :])
    return prefix
