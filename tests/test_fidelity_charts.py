"""The fidelity page's time chart reads as numbers of milliseconds (``fidelity.report.plot_times``)."""

from __future__ import annotations

import re

import pandas as pd

from simulator.fidelity.report import _label, plot_times


def test_time_axes_are_labelled_in_plain_milliseconds_without_colliding_minor_labels():
    # The quick suite's spread: 1.7 ms to 35 ms measured, 1.2 ms to 33 ms predicted.
    real = [0.0017, 0.0024, 0.0033, 0.0058, 0.0091, 0.035]
    sim = [0.0012, 0.0019, 0.0038, 0.0055, 0.0088, 0.033]
    df = pd.DataFrame({"metric": "est_seconds", "driver": "overlay", "backend": "kernel-overlay", "real": real,
                       "sim": sim})
    fig = plot_times(df)
    fig.canvas.draw()
    ax = fig.axes[0]
    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        position = 0 if axis is ax.xaxis else 1
        major = [t.get_text() for t in axis.get_majorticklabels() if lo <= t.get_position()[position] <= hi]
        assert len(major) >= 4 and all(re.fullmatch(r"\d+(\.\d+)?", label) for label in major), major
        assert not any(t.get_text() for t in axis.get_minorticklabels())  # "3×10⁰4×10⁰" was drawn there
    assert "2" in [t.get_text() for t in ax.xaxis.get_majorticklabels()]


def test_row_labels_read_as_options_a_person_set():
    options = '{"base_size": 1073741824, "chunk_size": 4096, "fs": "ext4", "journal": false}'
    assert _label("devicemapper", options, "reflink-thin") == \
        "reflink-thin (devicemapper base_size=1 GiB,chunk_size=4 KiB,fs=ext4,journal=false)"
    assert _label("overlay", '{"index": true, "metacopy": true}', "kernel-overlay") == \
        "kernel-overlay (overlay index,metacopy)"
    assert _label("vfs", "{}", "vfs-copy") == "vfs-copy (vfs)"
