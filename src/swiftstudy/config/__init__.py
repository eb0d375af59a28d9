"""The spec layer: YAML with line numbers, ``key=value`` overrides, and specs declared once.

Every command's spec (``study``, ``train``, ``validate``, ``probes``) is a frozen dataclass whose
fields are declared with :func:`option`: type, default, check and a one-line doc in one place
(``fields``). One reader (:func:`load_spec`, :func:`from_dict`: ``spec``, over the value rules of
``reader`` and the YAML of ``yamlio``) checks a document against it, one writer
(:meth:`Spec.to_dict`) gives the resolved config saved beside results, and :func:`describe_spec`
lists every key for ``--print-config``. Nothing here imports torch.
"""

from swiftstudy.config.fields import device, option, torch_dtype
from swiftstudy.config.spec import Spec, describe_spec, from_dict, load_spec, nested

__all__ = [
    "Spec",
    "describe_spec",
    "device",
    "from_dict",
    "load_spec",
    "nested",
    "option",
    "torch_dtype",
]
