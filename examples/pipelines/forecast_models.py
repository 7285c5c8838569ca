"""Compact forecasting networks for the ETT pipeline (plain torch ``nn.Module``\\ s).

``neuralforecast`` is not installed in this project (it would add ray, optuna,
pytorch-lightning and more next to our Lightning), so the model families of the paper's
Table 3 are implemented here in small form. Every model maps inputs ``x`` of shape
``(batch, input_len, features)`` — the target (OT) is feature 0 — to the next
``horizon`` target values ``(batch, horizon)``:

=========  ======================================================================
name       what it is
=========  ======================================================================
nlinear    NLinear (Zeng et al. 2023): one linear layer on the history minus its last value
dlinear    DLinear (Zeng et al. 2023): moving-average trend + remainder, a linear layer each
nbeats     N-BEATS-style MLP (Oreshkin et al. 2020): residual stack of FC blocks, backcast/forecast
tide       TiDE-style MLP (Das et al. 2023): dense residual encoder/decoder with projected covariates
gru        GRU encoder over all input features, linear head from the last state
lstm       the same with an LSTM cell
patchtst   PatchTST-style (Nie et al. 2023): RevIN, patches of the target, Transformer encoder
=========  ======================================================================

The univariate models (nlinear, dlinear, nbeats, patchtst) read only the target channel,
as they do in their papers (channel independence); gru, lstm and tide also read the loads
and the calendar features.
"""

from __future__ import annotations

import torch
from torch import nn

#: Every model name, in the order of the results table.
MODEL_NAMES = ("nlinear", "dlinear", "nbeats", "tide", "gru", "lstm", "patchtst")
#: Display names for tables and plots.
DISPLAY = {
    "nlinear": "NLinear",
    "dlinear": "DLinear",
    "nbeats": "NBEATS",
    "tide": "TiDE",
    "gru": "GRU",
    "lstm": "LSTM",
    "patchtst": "PatchTST",
}


class NLinear(nn.Module):
    """Linear map of the target history, relative to its last value."""

    def __init__(self, input_len: int, horizon: int, n_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(input_len, horizon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, L, F) -> (B, H)``."""
        z = x[:, :, 0]
        last = z[:, -1:]
        return self.linear(z - last) + last


class MovingAverage(nn.Module):
    """Moving average over time with edge replication, so the length is kept."""

    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.pool = nn.AvgPool1d(kernel, stride=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, L) -> (B, L)``."""
        front = z[:, :1].repeat(1, (self.kernel - 1) // 2)
        back = z[:, -1:].repeat(1, self.kernel // 2)
        return self.pool(torch.cat([front, z, back], dim=1).unsqueeze(1)).squeeze(1)


class DLinear(nn.Module):
    """Series decomposition (moving-average trend, remainder), one linear layer for each part."""

    def __init__(self, input_len: int, horizon: int, n_features: int, kernel: int = 25) -> None:
        super().__init__()
        self.trend = MovingAverage(kernel)
        self.linear_trend = nn.Linear(input_len, horizon)
        self.linear_season = nn.Linear(input_len, horizon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, L, F) -> (B, H)``."""
        z = x[:, :, 0]
        trend = self.trend(z)
        return self.linear_trend(trend) + self.linear_season(z - trend)


class NBeatsBlock(nn.Module):
    """Fully connected block that emits a backcast (subtracted from its input) and a forecast."""

    def __init__(self, input_len: int, horizon: int, hidden: int, layers: int, backcast: bool = True) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        width = input_len
        for _ in range(layers):
            mods += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.body = nn.Sequential(*mods)
        # The last block's backcast would feed nothing: leaving it out keeps every parameter
        # in the loss, which DDP requires (it fails on parameters without gradients).
        self.backcast = nn.Linear(hidden, input_len) if backcast else None
        self.forecast = nn.Linear(hidden, horizon)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(B, L) -> (backcast (B, L) or None, forecast (B, H))``."""
        h = self.body(z)
        return (self.backcast(h) if self.backcast is not None else None), self.forecast(h)


class NBeats(nn.Module):
    """N-BEATS (generic) on the target history, made relative to its last value."""

    def __init__(
        self, input_len: int, horizon: int, n_features: int, blocks: int = 3, hidden: int = 128, layers: int = 2
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            NBeatsBlock(input_len, horizon, hidden, layers, backcast=i < blocks - 1) for i in range(blocks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, L, F) -> (B, H)``."""
        z = x[:, :, 0]
        last = z[:, -1:]
        residual = z - last
        forecast = torch.zeros(z.shape[0], self.blocks[0].forecast.out_features, dtype=z.dtype, device=z.device)
        for block in self.blocks:
            back, fore = block(residual)
            if back is not None:
                residual = residual - back
            forecast = forecast + fore
        return forecast + last


class ResidualDense(nn.Module):
    """TiDE's residual block: MLP with one hidden layer, a linear skip, dropout and layer norm."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Linear(d_hidden, d_out), nn.Dropout(dropout))
        self.skip = nn.Linear(d_in, d_out)
        self.norm = nn.LayerNorm(d_out)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, d_in) -> (B, d_out)``."""
        return self.norm(self.mlp(z) + self.skip(z))


class TiDE(nn.Module):
    """TiDE-style dense encoder/decoder: target history plus projected past covariates.

    Past covariates only (the windows carry no future covariates); a linear skip from the
    target history to the horizon, as in the paper.
    """

    def __init__(self, input_len: int, horizon: int, n_features: int, hidden: int = 128, cov_dim: int = 4) -> None:
        super().__init__()
        self.n_cov = n_features - 1
        self.cov_proj = ResidualDense(self.n_cov, 16, cov_dim) if self.n_cov else None
        d_in = input_len * (1 + (cov_dim if self.n_cov else 0))
        self.encoder = nn.Sequential(ResidualDense(d_in, hidden, hidden), ResidualDense(hidden, hidden, hidden))
        self.decoder = ResidualDense(hidden, hidden, horizon)
        self.skip = nn.Linear(input_len, horizon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, L, F) -> (B, H)``."""
        z = x[:, :, 0]
        last = z[:, -1:]
        parts = [z - last]
        if self.cov_proj is not None:
            b, length, f = x.shape
            cov = self.cov_proj(x[:, :, 1:].reshape(b * length, f - 1)).reshape(b, -1)
            parts.append(cov)
        h = self.encoder(torch.cat(parts, dim=1))
        return self.decoder(h) + self.skip(z - last) + last


class RecurrentForecaster(nn.Module):
    """GRU or LSTM over all input features; a linear head maps the last state to the horizon."""

    def __init__(self, input_len: int, horizon: int, n_features: int, cell: str = "gru", hidden: int = 32) -> None:
        super().__init__()
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(n_features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, horizon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, L, F) -> (B, H)``; predicts the change from the last observed target."""
        out, _ = self.rnn(x)
        return self.head(out[:, -1]) + x[:, -1:, 0]


class PatchTST(nn.Module):
    """PatchTST-style: instance-normalised target, overlapping patches, a small Transformer encoder."""

    def __init__(
        self,
        input_len: int,
        horizon: int,
        n_features: int,
        patch_len: int = 16,
        stride: int = 8,
        d_model: int = 32,
        heads: int = 4,
        layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.patch_len, self.stride = patch_len, stride
        self.n_patches = (input_len - patch_len) // stride + 2  # +1 from padding the end by `stride`
        self.embed = nn.Linear(patch_len, d_model)
        self.position = nn.Parameter(torch.zeros(1, self.n_patches, d_model))
        layer = nn.TransformerEncoderLayer(d_model, heads, 2 * d_model, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.Flatten(1), nn.Dropout(dropout), nn.Linear(self.n_patches * d_model, horizon))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, L, F) -> (B, H)``."""
        z = x[:, :, 0]
        mean = z.mean(dim=1, keepdim=True)
        std = torch.sqrt(z.var(dim=1, keepdim=True, unbiased=False) + 1e-5)
        z = (z - mean) / std
        z = torch.cat([z, z[:, -1:].repeat(1, self.stride)], dim=1)
        patches = z.unfold(1, self.patch_len, self.stride)  # (B, n_patches, patch_len)
        h = self.encoder(self.embed(patches) + self.position)
        return self.head(h) * std + mean


class ChannelIndependent(nn.Module):
    """Forecast every input series from its own history with one shared univariate model.

    ``(B, L, C) -> (B, H * C)`` laid out like the targets ``(B, H, C)``, flattened: the
    series become extra batch rows, as NeuralForecast (and PatchTST's channel
    independence) treat a multivariate dataset.
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, L, C) -> (B, H * C)``."""
        b, length, c = x.shape
        out = self.inner(x.permute(0, 2, 1).reshape(b * c, length, 1))  # (B*C, H)
        return out.reshape(b, c, -1).permute(0, 2, 1).reshape(b, -1)


def build_model(
    name: str, input_len: int, horizon: int, n_features: int, channel_independent: bool = False
) -> nn.Module:
    """The model called ``name`` (one of :data:`MODEL_NAMES`) for these window sizes.

    ``channel_independent`` wraps a univariate model in :class:`ChannelIndependent`.
    """
    if channel_independent:
        return ChannelIndependent(build_model(name, input_len, horizon, 1))
    if name == "nlinear":
        return NLinear(input_len, horizon, n_features)
    if name == "dlinear":
        return DLinear(input_len, horizon, n_features)
    if name == "nbeats":
        return NBeats(input_len, horizon, n_features)
    if name == "tide":
        return TiDE(input_len, horizon, n_features)
    if name in ("gru", "lstm"):
        return RecurrentForecaster(input_len, horizon, n_features, cell=name)
    if name == "patchtst":
        return PatchTST(input_len, horizon, n_features)
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")


#: Learning rates that train each family well in a few epochs (Adam).
LEARNING_RATES = {
    "nlinear": 5e-3,
    "dlinear": 5e-3,
    "nbeats": 1e-3,
    "tide": 1e-3,
    "gru": 2e-3,
    "lstm": 2e-3,
    "patchtst": 1e-3,
}
