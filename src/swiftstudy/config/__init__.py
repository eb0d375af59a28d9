"""The spec layer: YAML with line numbers, ``key=value`` overrides, and specs declared once.

Every command's spec (``study``, ``train``, ``validate``, ``probes``) is a frozen dataclass whose
fields are declared with :func:`option`: type, default, check and a one-line doc in one place.
One reader (:func:`load_spec`, :func:`from_dict`) checks a document against it, one writer
(:func:`spec_to_dict`) gives the resolved config saved beside results, and
:func:`describe_spec` lists every key for ``--print-config``. Nothing here imports torch.
"""

from swiftstudy.config.fields import (
    Check,
    boolean,
    choice,
    device,
    dtype,
    integer,
    model,
    nested,
    number,
    option,
    path,
    regex,
    regexes,
    string,
    torch_dtype,
)
from swiftstudy.config.reader import (
    SpecValidator,
    absolute_path,
    describe_value,
    dotted_key,
    spec_error,
    spec_key_error,
)
from swiftstudy.config.spec import (
    Spec,
    describe_spec,
    from_dict,
    load_spec,
    read_spec,
    spec_to_dict,
)
from swiftstudy.config.yamlio import KeyPath, Lines, apply_overrides, dump_yaml, load_yaml

__all__ = [
    "Check",
    "KeyPath",
    "Lines",
    "Spec",
    "SpecValidator",
    "absolute_path",
    "apply_overrides",
    "boolean",
    "choice",
    "describe_spec",
    "describe_value",
    "device",
    "dotted_key",
    "dtype",
    "dump_yaml",
    "from_dict",
    "integer",
    "load_spec",
    "load_yaml",
    "model",
    "nested",
    "number",
    "option",
    "path",
    "read_spec",
    "regex",
    "regexes",
    "spec_error",
    "spec_key_error",
    "spec_to_dict",
    "string",
    "torch_dtype",
]
