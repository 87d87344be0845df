"""Acoustic features are standardised with statistics of the training split only, or each speaker's or
corpus's own; and that choice travels to corpora recorded elsewhere."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from emotion.data.corpora import load_corpus
from emotion.data.scan import usable_corpus
from emotion.features.acoustic_cache import AcousticCache
from emotion.features.normalisation import acoustic_statistics, moments, own_statistics
from emotion.files import write_atomically
from emotion.logger import NoRun
from emotion.settings import DataSettings, JobSettings
from emotion.training.baseline import fit_baseline
from emotion.training.loop import make_datasets, standardise_acoustics
from tests.conftest import SMALL_DEMO, compose_config, recorded_elsewhere, settings_of, untrained_model


def test_moments_are_numpys_mean_and_std_over_all_rows_leaving_nan_out():
    rng = np.random.default_rng(0)
    arrays = [rng.normal(3, 2, (n, 4)) for n in (5, 9, 1)]
    arrays[1][2, 1] = np.nan
    arrays[2][0, 3] = 7.0  # a constant column: std 1, not 0
    for array in arrays:
        array[:, 3] = 7.0
    result = moments(arrays)
    rows = np.concatenate(arrays)
    np.testing.assert_allclose(result.mean[:3], np.nanmean(rows[:, :3], axis=0), rtol=1e-5)
    np.testing.assert_allclose(result.std[:3], np.nanstd(rows[:, :3], axis=0), rtol=1e-5)
    assert (result.mean[3], result.std[3]) == (7.0, 1.0)
    standardised = result.standardise(np.array([[np.nan, 0.0, 0.0, 7.0]]))
    assert standardised[0, 0] == 0.0 and standardised[0, 3] == 0.0  # NaN and the constant go to the mean


@pytest.fixture
def demo_fold(cache_dir, tmp_path):
    """Fold 1 of the small demo with its acoustic features computed, in a cache of the test's own (entries
    are corrupted here)."""
    cfg = compose_config(["experiment=demo", *SMALL_DEMO])
    data = DataSettings.of(cfg.data)
    corpus, durations = usable_corpus(load_corpus(data), data, tmp_path)
    torch.manual_seed(0)
    model = untrained_model(cfg, corpus.dimensions)
    settings = JobSettings.of(cfg)
    cache = AcousticCache.for_model(tmp_path / "cache", 16000, model.encoder.grid, settings.model)
    acoustic = cache.ensure([item.path for item in corpus.splits.all], workers=1)
    datasets = make_datasets(corpus, durations, acoustic, model.encoder.grid, settings)
    return corpus, acoustic, model, datasets


def corrupt(entry, value=1e6):
    buffer = io.BytesIO()
    np.save(buffer, np.full_like(np.load(entry), value))
    write_atomically(entry, buffer.getvalue())


def kept_statistics(model) -> dict[str, torch.Tensor]:
    return {
        name: value.clone() for name, value in model.state_dict().items() if name.endswith(("_norm.mean", "_norm.std"))
    }


@pytest.mark.slow
def test_the_model_keeps_statistics_of_the_training_split_whatever_validation_and_test_hold(demo_fold):
    corpus, acoustic, model, datasets = demo_fold
    standardise_acoustics(model, datasets, corpus, acoustic, normalise="training")
    before = kept_statistics(model)
    assert set(before) == {"prosody_norm.mean", "prosody_norm.std", "functionals_norm.mean", "functionals_norm.std"}
    expected = acoustic_statistics(corpus.splits.train, acoustic)
    torch.testing.assert_close(before["prosody_norm.mean"], torch.from_numpy(expected.frames.mean))
    torch.testing.assert_close(before["functionals_norm.std"], torch.from_numpy(expected.functionals.std))

    for item in [*corpus.splits.val, *corpus.splits.test]:
        corrupt(acoustic[item.path].frames[0])
        corrupt(acoustic[item.path].functionals)
    standardise_acoustics(model, datasets, corpus, acoustic, normalise="training")
    after = kept_statistics(model)
    assert all(torch.equal(before[name], after[name]) for name in before)

    corrupt(acoustic[corpus.splits.train[0].path].frames[0])  # the check can fail: training items do count
    standardise_acoustics(model, datasets, corpus, acoustic, normalise="training")
    assert not torch.equal(kept_statistics(model)["prosody_norm.mean"], before["prosody_norm.mean"])


@pytest.mark.slow
def test_per_speaker_standardisation_gives_every_speaker_zero_mean_and_unit_variance(demo_fold):
    corpus, acoustic, model, datasets = demo_fold
    standardise_acoustics(model, datasets, corpus, acoustic, normalise="speaker")
    speakers = own_statistics("speaker", corpus.splits.all, acoustic)
    assert set(speakers.by_group) == {item.voice for item in corpus.splits.all}  # test speakers too
    test_speaker = corpus.splits.test[0].speaker
    own = [item for item in corpus.splits.all if item.speaker == test_speaker]
    frames = np.concatenate([speakers.frames(item, acoustic[item.path].read_frames()) for item in own])
    varying = frames.std(axis=0) > 0
    np.testing.assert_allclose(frames.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(frames.std(axis=0)[varying], 1, atol=1e-3)
    # The datasets apply it, and the model's own statistics are those of the speaker-standardised training split.
    example = datasets[2][0]
    item = datasets[2].items[datasets[2].segments[0].item]
    np.testing.assert_array_equal(
        example["functionals"], speakers.functionals(item, acoustic[item.path].read_functionals())
    )
    np.testing.assert_allclose(model.functionals_norm.mean.numpy(), 0, atol=1e-5)


@pytest.mark.slow
def test_the_baseline_keeps_its_score_on_a_corpus_recorded_elsewhere_with_corpus_normalisation(cache_dir, tmp_path):
    elsewhere = recorded_elsewhere(tmp_path / "demo-elsewhere", cache_dir)
    scores = {}
    for normalise in ("training", "corpus"):
        job = tmp_path / normalise
        job.mkdir()
        overrides = [f"data.test_corpora=[{elsewhere}]", f"data.test_normalise={normalise}"]
        metrics = fit_baseline(
            settings_of(["experiment=demo", *SMALL_DEMO, "model=baseline", *overrides]), job, NoRun()
        )
        scores[normalise] = metrics["cross"]["demo-elsewhere"]["test"]["ccc_mean"]
        original = metrics["test"]["ccc_mean"]  # the same test items, as recorded in the demo's own studio
        assert (job / "cross" / "demo-elsewhere" / "predictions.csv").is_file()
    # The quieter, duller channel shifts every feature: the training split's statistics no longer fit it, the
    # corpus's own do.
    assert abs(scores["corpus"] - original) < 0.1
    assert abs(scores["training"] - original) > abs(scores["corpus"] - original) + 0.05
