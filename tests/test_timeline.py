"""predict.plot=true's pictures: a recording's dimensions over time, and the HTML page over a folder of them."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from emotion.timeline import (
    DPI,
    NO_SPEECH,
    Stretch,
    Timeline,
    clock,
    plot_file_name,
    plot_timeline,
    steps,
    tick_step,
    timeline_figure,
    write_overview,
)

DIMENSIONS = ("arousal", "valence", "dominance")
SCALE = (1.0, 5.0)


def segment(start: float, end: float, values=(3.0, 2.5, 3.5), spread=None) -> Stretch:
    return Stretch(start, end, tuple(values), None if spread is None else tuple(spread))


def timeline(stretches, speech=None, duration=20.0, overall=None, name="talk/interview_01.wav") -> Timeline:
    return Timeline(name, duration, DIMENSIONS, SCALE, stretches, speech, overall)


# Two runs of speech, 1–4 s and 7–9 s: the gap between them is where nobody spoke.
SPEECH = [(1.0, 4.0), (7.0, 9.0)]
STRETCHES = [segment(1, 2.5, (2, 3, 4)), segment(2.5, 4, (3, 3, 4)), segment(7, 9, (4, 2, 1))]


def artists(ax, gid: str) -> list:
    return [artist for artist in (*ax.lines, *ax.collections) if artist.get_gid() == gid]


def test_each_dimension_gets_a_panel_over_the_rating_scale():
    figure = timeline_figure(timeline(STRETCHES, SPEECH))
    assert [ax.get_ylabel() for ax in figure.axes] == list(DIMENSIONS)
    assert all(ax.get_ylim() == SCALE for ax in figure.axes)
    assert all(ax.get_xlim() == (0.0, 20.0) for ax in figure.axes)
    assert figure.texts[0].get_text() == "talk/interview_01.wav"


def test_each_stretch_is_drawn_at_its_value_over_its_span():
    figure = timeline_figure(timeline(STRETCHES, SPEECH))
    (valence,) = artists(figure.axes[1], "prediction")
    times, values = valence.get_xdata(), valence.get_ydata()
    assert np.array_equal(times, [1, 2.5, 2.5, 4, np.nan, 7, 9], equal_nan=True)
    assert np.array_equal(values, [3, 3, 3, 3, np.nan, 2, 2], equal_nan=True)


def test_no_line_or_band_crosses_a_gap_of_no_speech():
    spread = (0.2, 0.3, 0.4)
    stretches = [segment(s.start_s, s.end_s, s.values, spread) for s in STRETCHES]
    figure = timeline_figure(timeline(stretches, SPEECH))
    for ax in figure.axes:
        (line,) = artists(ax, "prediction")
        times = line.get_xdata()
        runs = [run for run in np.split(times, np.flatnonzero(np.isnan(times))) if len(run[~np.isnan(run)])]
        assert [(np.nanmin(run), np.nanmax(run)) for run in runs] == [(1, 4), (7, 9)]
        (band,) = artists(ax, "spread")
        assert len(band.get_paths()) == 2  # one polygon per run of speech, none across the gap
        for path, (start, end) in zip(band.get_paths(), [(1, 4), (7, 9)], strict=True):
            assert path.vertices[:, 0].min() == start and path.vertices[:, 0].max() == end


def test_stretches_that_only_touch_are_one_unbroken_step_line():
    times, values, _ = steps([segment(0, 1, (2, 2, 2)), segment(1.0004, 2, (3, 3, 3))], 3)
    assert not np.isnan(times).any()
    assert values[:, 0].tolist() == [2, 2, 3, 3]


def test_overlapping_windows_share_their_overlap_at_its_middle():
    windows = [segment(0, 3, (1, 1, 1)), segment(1, 4, (2, 2, 2)), segment(2, 5, (3, 3, 3))]
    times, values, spreads = steps(windows, 3)
    assert times.tolist() == [0, 2, 2, 3, 3, 5]
    assert values[:, 0].tolist() == [1, 1, 2, 2, 3, 3]
    assert np.isnan(spreads).all()


def test_the_spread_band_is_value_plus_minus_spread_and_drawn_only_for_an_ensemble():
    one_model = timeline_figure(timeline(STRETCHES, SPEECH))
    assert all(artists(ax, "spread") == [] for ax in one_model.axes)
    ensemble = [segment(0, 2, (3, 2, 4), (0.5, 0.25, 1.0))]
    (band,) = artists(timeline_figure(timeline(ensemble, [(0, 2)])).axes[2], "spread")
    heights = band.get_paths()[0].vertices[:, 1]
    assert (heights.min(), heights.max()) == (3.0, 5.0)


def test_every_detected_speech_span_is_shaded_in_every_panel():
    figure = timeline_figure(timeline(STRETCHES, SPEECH))
    for ax in figure.axes:
        (shading,) = artists(ax, "speech")
        spans = [(path.vertices[:, 0].min(), path.vertices[:, 0].max()) for path in shading.get_paths()]
        assert spans == SPEECH
    without_detection = timeline_figure(timeline([segment(0, 20)], speech=None))
    assert all(len(artists(ax, "speech")[0].get_paths()) == 0 for ax in without_detection.axes)


def test_the_whole_file_prediction_is_a_dashed_line_per_dimension():
    figure = timeline_figure(timeline(STRETCHES, SPEECH, overall=(3.1, 2.9, 3.3)))
    for ax, value in zip(figure.axes, (3.1, 2.9, 3.3), strict=True):
        (line,) = artists(ax, "overall")
        assert line.get_linestyle() == "--"
        assert list(line.get_ydata()) == [value, value]
    assert all(artists(ax, "overall") == [] for ax in timeline_figure(timeline(STRETCHES, SPEECH)).axes)


def test_a_recording_without_speech_gets_one_panel_saying_so():
    figure = timeline_figure(timeline([], speech=[], duration=30.0))
    (ax,) = figure.axes
    assert [text.get_text() for text in ax.texts] == [NO_SPEECH]
    assert ax.get_xlim() == (0.0, 30.0)


def test_the_png_has_the_figures_size_in_pixels_and_no_temporary_file_is_left(tmp_path):
    recording = timeline(STRETCHES, SPEECH)
    width, height = timeline_figure(recording).get_size_inches()
    plot_timeline(recording, tmp_path / "plot.png")
    with Image.open(tmp_path / "plot.png") as image:
        assert image.format == "PNG"
        assert image.size == (round(width * DPI), round(height * DPI))
    assert [path.name for path in tmp_path.iterdir()] == ["plot.png"]


@pytest.mark.parametrize(
    ("duration", "label", "expected"),
    [(90.0, "time (s)", ["0", "20", "40", "60", "80"]), (600.0, "time (m:ss)", ["0:00", "1:00", "2:00", "10:00"])],
)
def test_time_reads_in_seconds_for_short_recordings_and_as_a_clock_beyond_two_minutes(duration, label, expected):
    figure = timeline_figure(timeline([segment(0, 10)], [(0, 10)], duration=duration))
    figure.canvas.draw()
    ax = figure.axes[-1]
    assert ax.get_xlabel() == label
    shown = [tick.get_text().replace("\N{MINUS SIGN}", "-") for tick in ax.get_xticklabels()]
    assert set(expected) <= set(shown)


def test_clock_and_tick_steps():
    assert clock(754) == "12:34"
    assert clock(3754, with_hours=True) == "1:02:34"
    assert clock(59.6) == "1:00"
    assert tick_step(600) == 60
    assert tick_step(3600) == 300
    assert 3600 / tick_step(3600) <= 12


def test_an_hour_with_a_thousand_stretches_and_spread_renders(tmp_path):
    rng = np.random.default_rng(0)
    starts = np.sort(rng.uniform(0, 3596, 1000))
    stretches = [segment(s, s + 3, rng.uniform(1, 5, 3), rng.uniform(0, 0.5, 3)) for s in starts]
    speech = [(s, s + 3) for s in starts[::2]]
    recording = timeline(stretches, speech, duration=3600.0, overall=(3, 3, 3))
    plot_timeline(recording, tmp_path / "hour.png")
    with Image.open(tmp_path / "hour.png") as image:
        assert image.size[0] == 1600  # the widest figure
    figure = timeline_figure(recording)
    assert figure.axes[-1].get_xlabel() == "time (h:mm:ss)"
    assert len(artists(figure.axes[0], "speech")[0].get_paths()) == 500


def test_a_name_with_dollar_signs_is_shown_as_written_not_as_mathematics(tmp_path):
    name = "takes/$5 and $10^$ deal.wav"
    plot_timeline(timeline(STRETCHES, SPEECH, name=name), tmp_path / "plot.png")
    assert timeline_figure(timeline(STRETCHES, SPEECH, name=name)).texts[0].get_text() == name


def test_a_stretch_with_the_wrong_number_of_values_is_named():
    with pytest.raises(ValueError, match=r"talk/interview_01.wav: a stretch at 1–2 s has 2 values .* 3 dimensions"):
        timeline_figure(timeline([Stretch(1, 2, (3.0, 3.0), None)], SPEECH))


def test_plot_file_names_are_safe_and_keep_same_named_recordings_apart():
    names = ["a/interview_01.wav", "b/interview_01.wav", "C:\\takes\\interview_01.WAV", "x/Ölçü test (2).flac"]
    files = [plot_file_name(name, index) for index, name in enumerate(names)]
    assert files[0] == "0000-interview_01.png"
    assert len(set(files)) == len(files)
    assert files[2] == "0002-interview_01.png"
    assert files[3] == "0003-Olcu_test_2.png"
    assert all(re.fullmatch(r"\d{4,}-[A-Za-z0-9._-]+\.png", file) for file in files)
    assert plot_file_name("../../$%?.wav", 12345) == "12345-recording.png"
    with pytest.raises(ValueError, match="index=-1"):
        plot_file_name("a.wav", -1)


class Page(HTMLParser):
    """What a browser would take from the overview: its images, its text, and whether it runs anything."""

    def __init__(self):
        super().__init__()
        self.images: list[dict] = []
        self.text: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        if tag == "img":
            self.images.append(dict(attrs))

    def handle_data(self, data):
        self.text.append(data.strip())


def test_the_overview_lists_each_recording_with_its_values_and_plot(tmp_path):
    plots = tmp_path / "plots"
    plots.mkdir()
    names = ["a/<b>&rock.wav", "b/quiet.wav"]
    entries = [
        (names[0], plots / plot_file_name(names[0], 0), {"arousal": 3.14159, "valence": 2.0, "dominance": math.nan}),
        (names[1], plots / plot_file_name(names[1], 1), None),
    ]
    for _, png, _ in entries:
        png.write_bytes(b"png")
    write_overview(entries, tmp_path / "overview.html")
    source = (tmp_path / "overview.html").read_text()
    assert "&lt;b&gt;&amp;rock.wav" in source and "<b>&rock" not in source
    page = Page()
    page.feed(source)
    assert [image["src"] for image in page.images] == ["plots/0000-b_rock.png", "plots/0001-quiet.png"]
    assert all((tmp_path / image["src"]).exists() for image in page.images)
    assert [image["alt"] for image in page.images] == names
    assert {"3.14", "2.00", "–", "no prediction"} <= set(page.text)
    assert names[0] in page.text
    assert not page.tags & {"script", "link", "iframe", "object"}
    assert "http" not in source


def test_the_overview_addresses_plots_relative_to_the_page_wherever_they_are(tmp_path):
    (tmp_path / "page").mkdir()
    (tmp_path / "my plots").mkdir()
    png = tmp_path / "my plots" / "0000-a.png"
    png.write_bytes(b"png")
    write_overview([("a.wav", png, {"arousal": 1.0})], tmp_path / "page" / "index.html")
    page = Page()
    page.feed((tmp_path / "page" / "index.html").read_text())
    assert page.images[0]["src"] == "../my%20plots/0000-a.png"
    assert [path.name for path in (tmp_path / "page").iterdir()] == ["index.html"]
