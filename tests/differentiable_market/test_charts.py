import numpy as np
import pandas as pd
import pytest

from differentiable_market.marketsimulator.charts import (
    equity_figure,
    excess_histogram_figure,
    external_references,
    figures_html,
    interval_figure,
    period_heatmap_figure,
    period_of,
    period_returns,
    rolling_sharpe,
)


def test_rolling_sharpe_of_a_constant_plus_alternating_series_matches_the_closed_form():
    c, a, ppy = 0.001, 0.01, 252.0
    r = c + a * (-1.0) ** np.arange(200)  # +a on even bars
    # Even window: mean c, sample variance a^2 n / (n - 1).
    got = rolling_sharpe(r, ppy, window=4)
    assert np.isnan(got[:3]).all()
    np.testing.assert_allclose(got[3:], c / (a * np.sqrt(4 / 3)) * np.sqrt(ppy), rtol=1e-12)
    # Odd window of 63: the majority sign s of the window gives mean c + s a / n and sample variance a^2 (n + 1) / n.
    n = 63
    got = rolling_sharpe(r, ppy)
    assert np.isnan(got[: n - 1]).all()
    s = np.where(np.arange(n - 1, 200) % 2 == 0, 1.0, -1.0)  # a window ending on an even bar starts on one too
    np.testing.assert_allclose(got[n - 1:], (c + s * a / n) / (a * np.sqrt((n + 1) / n)) * np.sqrt(ppy),
                               rtol=1e-10)
    assert np.isnan(rolling_sharpe(np.full(10, 0.01), ppy, window=5)[4:]).all()  # zero deviation: undefined


def test_monthly_returns_compound_the_bars_of_each_month():
    times = pd.bdate_range("2020-01-01", "2021-02-28")
    rng = np.random.default_rng(0)
    r = rng.normal(0.0005, 0.01, len(times))
    table = period_returns(times, r, "month")
    assert list(table.index) == [2020, 2021] and list(table.columns) == list(range(1, 13))
    jan = r[(times.year == 2020) & (times.month == 1)]
    assert table.loc[2020, 1] == pytest.approx(np.prod(1 + jan) - 1, rel=1e-12)
    feb21 = r[(times.year == 2021) & (times.month == 2)]
    assert table.loc[2021, 2] == pytest.approx(np.prod(1 + feb21) - 1, rel=1e-12)
    assert table.loc[2021, 3:].isna().all() and table.loc[2020].notna().all()
    # Hand-made: +10% then -10% in one month is -1%.
    two = period_returns(pd.DatetimeIndex(["2022-03-01", "2022-03-02"]), np.array([0.1, -0.1]), "month")
    assert two.loc[2022, 3] == pytest.approx(-0.01, rel=1e-12)


def test_intraday_bars_are_tabled_by_day():
    times = pd.date_range("2023-05-30 09:00", periods=48, freq="h")  # 30 May to 1 June
    assert period_of(times) == "day" and period_of(pd.bdate_range("2023-01-02", periods=30)) == "month"
    assert period_of(pd.date_range("2023-01-31", periods=5, freq="ME")) == "month"
    r = np.full(48, 0.001)
    table = period_returns(times, r, "day")
    assert list(table.index) == ["2023-05", "2023-06"] and list(table.columns) == list(range(1, 32))
    assert table.loc["2023-05", 30] == pytest.approx(1.001 ** 15 - 1, rel=1e-12)  # 09:00..23:00
    assert table.loc["2023-05", 31] == pytest.approx(1.001 ** 24 - 1, rel=1e-12)
    assert table.loc["2023-06", 1] == pytest.approx(1.001 ** 9 - 1, rel=1e-12)


def test_external_references_flags_network_urls_but_not_local_ones():
    page = ('<a href="equity.png">x</a><img src="data:image/png;base64,AA"><a href="#top">t</a>'
            '<script>var u = "https://cloud.example/x"; var s = \'<script src="http://x">\';</script>')
    assert external_references(page) == []  # script bodies are code, not markup
    assert external_references('<script src="https://cdn.example/p.js"></script>') != []
    assert external_references('<script src="plotly.js"></script>') != []  # every script must be inline
    assert external_references('<link href="//cdn.example/a.css">') != []
    assert external_references('<img src="HTTP://x/a.png">') != []


def test_figures_embed_plotly_once_and_load_nothing():
    times = pd.bdate_range("2021-01-04", periods=80)
    r = np.random.default_rng(1).normal(0, 0.01, 80)
    parts = figures_html({"period_returns": period_heatmap_figure(period_returns(times, r, "month"), "month"),
                          "excess_returns": excess_histogram_figure(r)})
    page = "".join(parts.values())
    assert "* plotly.js v" in parts["period_returns"] and "* plotly.js v" not in parts["excess_returns"]
    assert 'id="chart-period_returns"' in page and 'id="chart-excess_returns"' in page
    assert external_references(page) == []
    assert '"showSendToCloud": false' in page  # no button that posts the data to plotly's cloud


def test_a_log_wealth_axis_keeps_a_hundredfold_grower_and_a_flat_line_apart():
    times = pd.bdate_range("2021-01-04", periods=101)
    log_w = {"big": np.linspace(0.0, np.log(100.0), 101), "flat": np.zeros(101)}
    fig = equity_figure(times, log_w, {"big": "Big"}, {"big"}, [0, 50], "t", log_y=True,
                        styles={"big": dict(color="black"), "flat": dict(dash="dash")})
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis2.type in (None, "linear")  # drawdown stays linear
    big, big_dd, flat = fig.data
    assert (big.name, flat.name) == ("Big", "flat") and not big_dd.showlegend
    assert big.y[-1] == pytest.approx(100.0, rel=1e-12) and np.allclose(big_dd.y, 0.0)  # never below its peak
    assert big_dd.line.color == big.line.color == "black" and flat.line.dash == "dash" and flat.line.color
    assert equity_figure(times, log_w, {}, set(), [0], "t").layout.yaxis.type == "linear"  # the backtest's default


def test_interval_figure_draws_each_interval_around_its_estimate():
    fig = interval_figure({"excess %/yr": {"vs a": (1.0, -2.0, 5.0), "vs b": (-3.0, -4.0, -1.0)},
                           "Sharpe difference": {"vs a": (0.5, 0.1, 0.6), "vs b": (0.0, -1.0, 2.0)}}, "t")
    left, right = fig.data
    assert list(left.y) == ["vs a", "vs b"] and list(left.x) == [1.0, -3.0]
    np.testing.assert_allclose(left.error_x.array, [4.0, 2.0])  # high - estimate
    np.testing.assert_allclose(left.error_x.arrayminus, [3.0, 1.0])  # estimate - low
    np.testing.assert_allclose(right.error_x.array, [0.1, 2.0])
    assert fig.layout.xaxis.title.text == "excess %/yr" and fig.layout.xaxis2.title.text == "Sharpe difference"
    assert [shape.x0 for shape in fig.layout.shapes] == [0, 0]  # the line at zero, in each panel


def test_fragments_can_leave_plotly_to_the_page_that_carries_it():
    parts = figures_html({"a": excess_histogram_figure(np.zeros(5)), "b": excess_histogram_figure(np.ones(5))},
                         embed_plotlyjs=False)
    assert not any("* plotly.js v" in part for part in parts.values())
    assert 'id="chart-a"' in parts["a"] and 'id="chart-b"' in parts["b"]
