"""The batch settings every adapter takes, declared once: :class:`BatchSettings` and its keywords.

An adapter entry point (``deeprc_torch.loader``, ``DeepRCDataModule``,
``deeprc_tf.make_dataset``, ``DeepRCSequence``, your own) lists only its framework's own
arguments and takes the batch settings as ``**options: Unpack[BatchOptions]``; it builds
its batches with ``BatchSettings.from_options(what, options).table_batches(...)``. So the
names, types, defaults, checks and error messages are the same in every adapter, and a
new setting is added here once.

=================  ===========  ===============================================================
keyword            default      meaning
=================  ===========  ===============================================================
``shuffle``        ``True``     ``True``/``"local"`` (each rank permutes its samples per epoch),
                                ``"global"`` (rows move across ranks every epoch) or ``False``;
                                evaluation splits are never shuffled
``seed``           ``0``        shuffles depend only on it and the epoch
``even``           ``"auto"``   ``"auto"``, ``"drop"``, ``"pad"`` or ``"rebalance"``: how uneven
                                partitions still give every rank the same number of batches
                                (``"auto"``: drop when that skips at most one sample a rank, else
                                rebalance; see :mod:`deeprc_core.plan`)
``window``         ``None``     ``(input_len, horizon[, stride])``, a dict or a
                                :class:`~deeprc_core.windows.Window`: batches of windows
``eval_window``    ``None``     the window of evaluation splits (default: ``window``)
``drop_last``      ``False``    drop this rank's last, short training batch
``dropna_target``  ``True``     skip samples whose target is NaN
``dtype``          ``float32``  of x and y: a numpy, torch or TensorFlow dtype, or its name
``readonly``       ``"auto"``   read-only views (:data:`~deeprc_core.views.ReadOnlyPolicy`);
                                immutable consumers (TensorFlow) always alias
``stack_ahead``    ``2``        groups of batches (~1 MiB each) the kernel's thread stacks ahead
                                when features are separate columns (0: in the consuming thread)
=================  ===========  ===============================================================
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeVar, get_type_hints

import numpy as np

from .plan import EVEN_POLICIES, EvenPolicy, ShuffleMode, check_shuffle_with_window, normalize_shuffle
from .views import READONLY_POLICIES, ReadOnlyPolicy
from .windows import Window

if TYPE_CHECKING:
    from .batches import TableBatches
    from .table import GlobalTable

#: What ``window=``/``eval_window=`` accept.
WindowSpec = Window | Sequence[int] | Mapping[str, Any] | None


class BatchOptions(TypedDict, total=False):
    """The batch-setting keywords of every adapter (``**options: Unpack[BatchOptions]``); see the module table."""

    shuffle: bool | Literal["none", "local", "global"]
    seed: int
    even: EvenPolicy
    window: WindowSpec
    eval_window: WindowSpec
    drop_last: bool
    dropna_target: bool
    dtype: Any
    readonly: ReadOnlyPolicy
    stack_ahead: int


#: What the signature shows for a default the record stores normalised (``shuffle=True`` is ``"local"``).
_SHOWN_DEFAULTS: dict[str, Any] = {"shuffle": True, "dtype": "float32"}

F = TypeVar("F", bound=Callable[..., Any])


def with_batch_options(func: F) -> F:
    """Show the batch settings in ``func``'s signature in place of its ``**options: Unpack[BatchOptions]``.

    ``help()``, IDEs and LightningCLI (jsonargparse reads ``inspect.signature``) then list
    every setting with its type and default, all taken from :class:`BatchSettings`, so an
    adapter entry point still declares none of them itself.
    """
    sig = inspect.signature(func)
    params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    hints = get_type_hints(BatchOptions)
    params += [
        inspect.Parameter(
            f.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=_SHOWN_DEFAULTS.get(f.name, f.default),
            annotation=hints[f.name],
        )
        for f in fields(BatchSettings)
    ]
    func.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    return func


def as_numpy_dtype(dtype: Any) -> np.dtype:
    """A numpy dtype from a numpy, torch (``torch.float32``) or TensorFlow (``tf.float32``) dtype, or a name."""
    numpy_of_tf = getattr(dtype, "as_numpy_dtype", None)
    if numpy_of_tf is not None:
        return np.dtype(numpy_of_tf)
    text = str(dtype)
    if text.startswith("torch."):  # torch dtypes print as torch.float32; the core never imports torch
        return np.dtype(text.removeprefix("torch."))
    return np.dtype(dtype)


@dataclass(frozen=True)
class BatchSettings:
    """How an adapter cuts a table into batches: one record, checked once, with the same types everywhere."""

    shuffle: ShuffleMode = "local"
    seed: int = 0
    even: EvenPolicy = "auto"
    window: Window | None = None
    #: the window of evaluation splits (val/test/predict); ``window`` when not given
    eval_window: Window | None = None
    drop_last: bool = False
    dropna_target: bool = True
    dtype: np.dtype = np.dtype(np.float32)
    readonly: ReadOnlyPolicy = "auto"
    stack_ahead: int = 2

    @classmethod
    def from_options(cls, what: str, options: Mapping[str, Any]) -> BatchSettings:
        """Check and normalise the keywords an adapter received (``what`` names it in every error)."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise TypeError(f"{what}: unknown keyword(s) {unknown}; the batch settings are {known}")
        o = dict(options)
        even = o.get("even", "auto")
        if even not in EVEN_POLICIES:
            raise ValueError(f"{what}: even={even!r}: choose one of {EVEN_POLICIES}")
        readonly = o.get("readonly", "auto")
        if readonly not in READONLY_POLICIES:
            raise ValueError(f"{what}: readonly={readonly!r}: choose one of {READONLY_POLICIES}")
        try:
            shuffle = normalize_shuffle(o.get("shuffle", True))
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
        window = Window.coerce(o.get("window"))
        eval_window = Window.coerce(o.get("eval_window")) or window
        if (window is None) != (eval_window is None):
            raise ValueError(
                f"{what}: eval_window= needs window= (batches of rows and of windows cannot be mixed across splits)"
            )
        check_shuffle_with_window(shuffle, window, what)
        stack_ahead = o.get("stack_ahead", 2)
        if isinstance(stack_ahead, bool) or not isinstance(stack_ahead, int) or stack_ahead < 0:
            raise ValueError(
                f"{what}: stack_ahead={stack_ahead!r}: give a number of groups >= 0 (0: stack in the loop)"
            )
        return cls(
            shuffle=shuffle,
            seed=int(o.get("seed", 0)),
            even=even,
            window=window,
            eval_window=eval_window,
            drop_last=bool(o.get("drop_last", False)),
            dropna_target=bool(o.get("dropna_target", True)),
            dtype=as_numpy_dtype(o.get("dtype", np.float32)),
            readonly=readonly,
            stack_ahead=stack_ahead,
        )

    def for_eval(self) -> BatchSettings:
        """These settings for an evaluation split: in order, nothing dropped, in ``eval_window``."""
        return replace(self, shuffle="none", drop_last=False, window=self.eval_window)

    def table_batches(
        self,
        table: GlobalTable,
        features: str | Sequence[str],
        target: str | Sequence[str] | None,
        batch_size: int,
        *,
        evaluation: bool = False,
        align: int | None = None,
        what: str = "dataset",
    ) -> TableBatches:
        """The agreed :class:`~deeprc_core.TableBatches` of ``table`` under these settings (collective)."""
        from .batches import TableBatches

        s = self.for_eval() if evaluation else self
        return TableBatches(
            table,
            features,
            target,
            batch_size,
            shuffle=s.shuffle,
            seed=s.seed,
            even=s.even,
            drop_last=s.drop_last,
            window=s.window,
            dropna_target=s.dropna_target,
            dtype=s.dtype,
            align=align,
            stack_ahead=s.stack_ahead,
            what=what,
        )

    def prediction_batches(
        self,
        table: GlobalTable,
        features: str | Sequence[str],
        target: str | Sequence[str] | None,
        batch_size: int,
        *,
        window: Window | Sequence[int] | dict[str, Any] | None = None,
        dropna_target: bool = False,
        align: int | None = None,
        what: str = "predict",
    ) -> TableBatches:
        """:func:`deeprc_core.prediction.prediction_batches` in these settings' dtype and ``eval_window`` (collective).

        ``window`` overrides ``eval_window``; every sample is predicted unless ``dropna_target``.
        """
        from .prediction import prediction_batches

        return prediction_batches(
            table,
            features,
            target,
            batch_size,
            window=self.eval_window if window is None else window,
            dropna_target=dropna_target,
            dtype=self.dtype,
            align=align,
            what=what,
        )
