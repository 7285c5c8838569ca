"""The batch settings every adapter takes, declared once: :class:`BatchSettings` and its keywords.

An adapter entry point (``deeprc_torch.loader``, ``DeepRCDataModule``,
``deeprc_tf.make_dataset``, ``DeepRCSequence``, your own) lists only its framework's own
arguments and takes the batch settings as ``**options: Unpack[BatchOptions]``; it builds
its batches with ``TableBatches(table, features, target, batch_size, settings)`` where
``settings = BatchSettings.from_options(what, options)``. So the names, types, defaults,
checks and error messages are the same in every adapter, each setting is checked once (in
:meth:`BatchSettings.from_options`), and a new setting is added here once: a field of
:class:`BatchSettings`, its keyword in :class:`BatchOptions` and its row below (plus its check
in ``from_options`` when it needs one); only the code that uses it reads it from the record.

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
``readonly``       ``"auto"``   read-only views (:data:`~deeprc_core.readonly.ReadOnlyPolicy`);
                                immutable consumers (TensorFlow) always alias
``stack_ahead``    ``2``        groups of batches (~1 MiB each) the kernel's thread stacks ahead
                                when features are separate columns (0: in the consuming thread)
=================  ===========  ===============================================================
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, TypedDict, TypeVar, get_type_hints

import numpy as np

from .plan import EVEN_POLICIES, EvenPolicy, ShuffleMode, check_shuffle_with_window, normalize_shuffle
from .readonly import READONLY_POLICIES, ReadOnlyPolicy
from .windows import Window

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
        """Check and normalise the keywords an adapter received (``what`` names it in every error).

        The one place a setting is checked: whatever takes the record (``TableBatches``, the
        adapters) trusts it. A setting not named below is taken as given, with its field's default.
        """
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise TypeError(f"{what}: unknown keyword(s) {unknown}; the batch settings are {known}")
        o: dict[str, Any] = {f.name: f.default for f in fields(cls)}
        o.update(options)
        if o["even"] not in EVEN_POLICIES:
            raise ValueError(f"{what}: even={o['even']!r}: choose one of {EVEN_POLICIES}")
        if o["readonly"] not in READONLY_POLICIES:
            raise ValueError(f"{what}: readonly={o['readonly']!r}: choose one of {READONLY_POLICIES}")
        try:
            o["shuffle"] = normalize_shuffle(o["shuffle"])
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
        o["window"] = window = Window.coerce(o["window"])
        o["eval_window"] = Window.coerce(o["eval_window"]) or window
        if (window is None) != (o["eval_window"] is None):
            raise ValueError(
                f"{what}: eval_window= needs window= (batches of rows and of windows cannot be mixed across splits)"
            )
        check_shuffle_with_window(o["shuffle"], window, what)
        stack_ahead = o["stack_ahead"]
        if isinstance(stack_ahead, bool) or not isinstance(stack_ahead, int) or stack_ahead < 0:
            raise ValueError(
                f"{what}: stack_ahead={stack_ahead!r}: give a number of groups >= 0 (0: stack in the loop)"
            )
        o["seed"] = int(o["seed"])
        o["drop_last"], o["dropna_target"] = bool(o["drop_last"]), bool(o["dropna_target"])
        o["dtype"] = as_numpy_dtype(o["dtype"])
        return cls(**o)

    @classmethod
    def resolve(
        cls, what: str, settings: BatchSettings | None, options: Mapping[str, Any], **defaults: Any
    ) -> BatchSettings:
        """``settings``, or else the record of the keywords ``options`` (over ``defaults``).

        For a class that takes the record or, as a convenience, the keywords (``TableBatches``,
        :func:`~deeprc_core.prediction.prediction_batches`): both reach :meth:`from_options`.
        """
        if settings is None:
            return cls.from_options(what, {**defaults, **options})
        if not isinstance(settings, BatchSettings):
            raise TypeError(f"{what}: settings must be a BatchSettings record, got {type(settings).__name__}")
        if options:
            raise TypeError(
                f"{what}: give the batch settings as a BatchSettings record or as keywords, not both "
                f"(keywords {sorted(options)}; use dataclasses.replace(settings, ...) to change a record)"
            )
        return settings

    def for_eval(self) -> BatchSettings:
        """These settings for an evaluation split: in order, nothing dropped, in ``eval_window``."""
        return replace(self, shuffle="none", drop_last=False, window=self.eval_window)

    def for_prediction(self, window: WindowSpec = None, dropna_target: bool = False) -> BatchSettings:
        """These settings for prediction: in order, padded (equal batch counts), every sample unless ``dropna_target``.

        ``window`` overrides ``eval_window``.
        """
        w = Window.coerce(window) or self.eval_window
        return replace(
            self, shuffle="none", even="pad", drop_last=False, window=w, eval_window=w, dropna_target=dropna_target
        )
