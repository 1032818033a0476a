"""Interactive charts of report.html, drawn with plotly and embedded in the page (fully offline).

The figures read the path of returns.csv (the non-overlapping chain of windows): equity and drawdown, policy weights,
the rolling Sharpe ratio of the policy against equal weight, a per-period return table as a heatmap, and the
distribution of per-bar excess returns (policy minus equal weight). plotly.js is written into the page once, inside a
``<script>`` element; nothing is loaded from the network.

The numbers behind the rolling Sharpe and the heatmap come from ``rolling_sharpe`` and ``period_returns``, plain
functions of a returns series. The study report (``study.report``) draws its wealth with ``equity_figure`` on a log
axis and its confidence intervals with ``interval_figure``.
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any, Literal

import numpy as np
import pandas as pd

ROLLING_BARS = 63  # about a quarter of daily bars
Period = Literal["month", "day"]
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def rolling_sharpe(returns: np.ndarray, periods_per_year: float, window: int = ROLLING_BARS) -> np.ndarray:
    """Rolling annualised Sharpe ratio (risk-free 0) of per-bar simple returns, shape (T,) -> (T,).

    Bar t uses bars t-window+1..t: mean / standard deviation (ddof=1) * sqrt(periods_per_year), as ``metrics``'
    sharpe. NaN for the first window-1 bars and where the deviation is 0."""
    r = pd.Series(np.asarray(returns, dtype=np.float64))
    roll = r.rolling(window, min_periods=window)
    std = roll.std(ddof=1).to_numpy()
    mean = roll.mean().to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(std > 0, mean / std, np.nan) * np.sqrt(periods_per_year)
    return out


def period_of(times: pd.DatetimeIndex) -> Period:
    """The heatmap's period from the bar spacing: months for daily or coarser bars, days for intraday bars."""
    if len(times) < 2:
        return "month"
    return "month" if np.median(np.diff(times.asi8)) >= pd.Timedelta(hours=20).value else "day"


def period_returns(times: pd.DatetimeIndex, returns: np.ndarray, period: Period) -> pd.DataFrame:
    """Compounded simple return per period, prod(1 + r) - 1, as a table for the heatmap.

    ``month``: one row per year, columns 1..12 (calendar month). ``day``: one row per year-month (``YYYY-MM``),
    columns 1..31 (day of the month). Periods without a bar are NaN. Each bar counts in the period of its
    timestamp (the decision bar, as in returns.csv)."""
    s = pd.Series(np.log1p(np.asarray(returns, dtype=np.float64)), index=times)
    if period == "month":
        keys, cols = [s.index.year, s.index.month], range(1, 13)
    else:
        keys, cols = [s.index.strftime("%Y-%m"), s.index.day], range(1, 32)
    table = np.expm1(s.groupby(keys).sum()).unstack()
    return table.reindex(columns=list(cols))


def _plotly() -> Any:
    try:
        import plotly.graph_objects as go
        import plotly.io as pio
        from plotly.subplots import make_subplots
    except ImportError as e:  # a core dependency; a broken install should still say what to do
        raise ImportError("report.html's charts need plotly: uv add plotly (or pip install plotly)") from e
    return go, pio, make_subplots


def _layout(fig: Any, title: str, height: int) -> None:
    fig.update_layout(title=title, height=height, template="plotly_white", hovermode="x unified",
                      margin=dict(l=60, r=20, t=60, b=40), legend=dict(font=dict(size=11)))


BACKTEST_STYLES = {"policy": dict(color="black", width=2.5),
                   "best_single_hindsight": dict(color="grey", width=1.2, dash="dash")}


def _backtest_style(name: str) -> dict[str, Any]:
    if name.startswith("hold:"):
        return dict(width=0.8, dash="dot")
    return BACKTEST_STYLES.get(name, dict(width=1.3))


def equity_figure(times: pd.Index, log_wealth: dict[str, np.ndarray], labels: dict[str, str],
                  drawdown: set[str], starts: list[int], title: str,
                  styles: dict[str, dict[str, Any]] | None = None, log_y: bool = False) -> Any:
    """Wealth (top) and drawdown in % (bottom) of each strategy; ``drawdown`` names the strategies whose drawdown is
    drawn; vertical lines mark window starts after the first (``starts``: indices into ``times``).

    ``styles`` gives each strategy's plotly line (color, width, dash); None: the backtest's (policy bold black,
    hindsight grey dashed, single-asset holds dotted). ``log_y`` puts wealth on a log axis, where equal growth rates
    look equally steep whatever the wealth, so a strategy that grows 100x does not flatten the others."""
    go, _, make_subplots = _plotly()
    from plotly.colors import qualitative

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.04)
    for i, (name, lw) in enumerate(log_wealth.items()):
        # an explicit colour (the template's cycle), so a strategy's drawdown has the colour of its wealth
        style = {"color": qualitative.Plotly[i % len(qualitative.Plotly)],
                 **(styles[name] if styles is not None else _backtest_style(name))}
        fig.add_trace(go.Scatter(x=times, y=np.exp(lw), name=labels.get(name, name), legendgroup=name, line=style,
                                 hovertemplate="%{y:.4f}"), row=1, col=1)
        if name in drawdown:
            dd = 1 - np.exp(lw - np.maximum.accumulate(np.maximum(lw, 0.0)))
            fig.add_trace(go.Scatter(x=times, y=-100 * dd, name=labels.get(name, name), legendgroup=name,
                                     showlegend=False, line=style, hovertemplate="%{y:.2f}%"), row=2, col=1)
    for k in starts[1:]:
        fig.add_vline(x=times[k], line=dict(color="#ccc", width=1))
    fig.update_yaxes(title_text="wealth (start = 1" + (", log scale)" if log_y else ")"), row=1, col=1,
                     type="log" if log_y else "linear")
    fig.update_yaxes(title_text="drawdown %", row=2, col=1)
    _layout(fig, title, 620)
    return fig


def weights_figure(times: pd.DatetimeIndex, weights: np.ndarray, names: list[str]) -> Any:
    """Stacked target weights, shape (T, assets)."""
    go, _, _ = _plotly()
    fig = go.Figure()
    for i, name in enumerate(names):
        fig.add_trace(go.Scatter(x=times, y=weights[:, i], name=name, stackgroup="w", mode="lines",
                                 line=dict(width=0.5), hovertemplate="%{y:.3f}"))
    fig.update_yaxes(title_text="target weight", range=[0, 1])
    _layout(fig, "Policy target weights (chain of non-overlapping windows)", 380)
    return fig


def rolling_sharpe_figure(times: pd.DatetimeIndex, sharpe: dict[str, np.ndarray], window: int) -> Any:
    go, _, _ = _plotly()
    fig = go.Figure()
    for name, v in sharpe.items():
        fig.add_trace(go.Scatter(x=times, y=v, name=name, mode="lines", hovertemplate="%{y:.2f}",
                                 line=dict(color="black", width=2) if name == "policy" else dict(width=1.4)))
    fig.add_hline(y=0, line=dict(color="#999", width=1))
    fig.update_yaxes(title_text="annualised Sharpe")
    _layout(fig, f"Rolling {window}-bar Sharpe ratio (returns.csv path)", 360)
    return fig


def period_heatmap_figure(table: pd.DataFrame, period: Period) -> Any:
    """Heatmap of ``period_returns`` in %, green up and red down, each cell labelled."""
    go, _, _ = _plotly()
    z = 100 * table.to_numpy(dtype=np.float64)
    x = list(MONTHS) if period == "month" else [str(c) for c in table.columns]
    y = [str(i) for i in table.index]
    bound = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    text = [["" if not np.isfinite(v) else f"{v:.1f}" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=x, y=y, text=text, texttemplate="%{text}", colorscale="RdYlGn",
                               zmid=0, zmin=-bound, zmax=bound, colorbar=dict(title="%"),
                               hovertemplate="%{y} %{x}: %{z:.2f}%<extra></extra>"))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    what = "Monthly" if period == "month" else "Daily"
    _layout(fig, f"{what} returns of the policy, % (compounded, fees included)", 120 + 28 * max(len(y), 3))
    fig.update_layout(hovermode="closest")
    return fig


def excess_histogram_figure(excess: np.ndarray) -> Any:
    """Histogram of per-bar excess simple returns (policy minus equal weight), in %."""
    go, _, _ = _plotly()
    x = 100 * np.asarray(excess, dtype=np.float64)
    fig = go.Figure(go.Histogram(x=x, nbinsx=60, marker=dict(color="#4c72b0"),
                                 hovertemplate="%{x}%: %{y} bars<extra></extra>"))
    mean = float(np.mean(x)) if len(x) else 0.0
    fig.add_vline(x=0, line=dict(color="#999", width=1))
    fig.add_vline(x=mean, line=dict(color="black", width=1.5, dash="dash"),
                  annotation_text=f"mean {mean:+.3f}%", annotation_position="top right")
    fig.update_xaxes(title_text="policy minus equal weight, % per bar")
    fig.update_yaxes(title_text="bars")
    _layout(fig, "Distribution of per-bar excess returns (policy minus equal weight)", 360)
    fig.update_layout(hovermode="closest", bargap=0.02)
    return fig


def interval_figure(panels: dict[str, dict[str, tuple[float, float, float]]], title: str) -> Any:
    """Confidence intervals side by side: one panel per statistic (keyed by its axis title), one row per comparison
    (keyed by its label, the same in every panel) holding (estimate, low, high); a red line at zero. Rows read top
    to bottom in the order given."""
    go, _, make_subplots = _plotly()
    fig = make_subplots(rows=1, cols=len(panels), shared_yaxes=True, horizontal_spacing=0.06)
    for col, (axis, rows) in enumerate(panels.items(), start=1):
        labels = list(rows)
        est, lo, hi = (np.array([rows[k][i] for k in labels], dtype=np.float64) for i in range(3))
        fig.add_trace(go.Scatter(
            x=est, y=labels, mode="markers", marker=dict(color="black", size=9), showlegend=False,
            error_x=dict(type="data", symmetric=False, array=hi - est, arrayminus=est - lo, width=6),
            customdata=np.stack([lo, hi], axis=1),
            hovertemplate="%{y}: %{x:.3f} [%{customdata[0]:.3f}, %{customdata[1]:.3f}]<extra></extra>"),
            row=1, col=col)
        fig.add_vline(x=0, line=dict(color="red", width=1), row=1, col=col)
        fig.update_xaxes(title_text=axis, row=1, col=col)
        fig.update_yaxes(type="category", autorange="reversed", row=1, col=col)
    _layout(fig, title, 150 + 40 * max(len(rows) for rows in panels.values()))
    fig.update_layout(hovermode="closest")
    return fig


def figures_html(figures: dict[str, Any], embed_plotlyjs: bool = True) -> dict[str, str]:
    """HTML fragment per figure, keyed as given; the first carries plotly.js inline, the others reuse it. Each
    figure's div has id ``chart-<key>``. ``embed_plotlyjs=False``: none carries it, for fragments added to a page
    whose earlier charts already did (the study report's ``extra_sections``)."""
    _, pio, _ = _plotly()
    # plotly.js 3 shows a "send to Chart Studio" button by default, which posts the data to plotly's cloud: never.
    config = {"displaylogo": False, "responsive": True, "showSendToCloud": False, "plotlyServerURL": ""}
    return {key: pio.to_html(fig, include_plotlyjs=(embed_plotlyjs and i == 0), full_html=False,
                             div_id=f"chart-{key}", config=config)
            for i, (key, fig) in enumerate(figures.items())}


class _Links(HTMLParser):
    """Collects the URL-valued attributes of every tag; script bodies are not parsed as markup."""

    URL_ATTRS = {"src", "href", "srcset", "data", "action", "poster", "background"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [(tag, k, v or "") for k, v in attrs if k in self.URL_ATTRS]


def external_references(page: str) -> list[str]:
    """The tags of an HTML page that would load or link something off the machine (an http(s), protocol-relative or
    other non-local URL in a src, href or similar attribute), plus any ``<script src>``: empty for an offline page."""
    parser = _Links()
    parser.feed(page)
    parser.close()
    bad = []
    for tag, attr, value in parser.found:
        v = value.strip().lower()
        local = not v.startswith("//") and (":" not in v.split("/")[0] or v.startswith(("data:", "#")))
        if not local or (tag == "script" and attr == "src"):
            bad.append(f"<{tag} {attr}={value!r}>")
    return bad
