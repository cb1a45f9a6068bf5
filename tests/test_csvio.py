"""clipiqa.csvio: any file name round-trips through a CSV; writes are atomic, keep the mode, leave no temp."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

import clipiqa.csvio
from clipiqa.csvio import TMP_SUFFIX, atomic_write, read_csv, write_csv

# Subprocesses load csvio from its file, without importing clipiqa (and torch): fast on a busy machine.
_LOAD_CSVIO = ("import importlib.util as u; s = u.spec_from_file_location('csvio', {!r}); "
               "csvio = u.module_from_spec(s); s.loader.exec_module(csvio)").format(clipiqa.csvio.__file__)

ODD_NAMES = [
    os.fsdecode(b"caf\xe9.jpg"),            # Latin-1 byte: not valid UTF-8
    os.fsdecode(b"\xff\xfe bad \xc3.png"),  # several invalid bytes, one a truncated sequence before '.'
    os.fsdecode(b"end\xc3"),                # truncated UTF-8 sequence right before the delimiter
    "a\rb.jpg", "a\nb.jpg", "a\r\nb.jpg", 'q"uote".jpg', "comma,name.jpg", "both,\"x\"\n.jpg",
    "NA", "nan", "None", "1.0", "007", "1e3", " leading and trailing ", "#hash.jpg", "ünïcødé 写真.jpg",
    "tab\there.jpg", "semi;colon.jpg",
]


def _frame() -> pd.DataFrame:
    n = len(ODD_NAMES)
    return pd.DataFrame({"path": ODD_NAMES, "score": np.linspace(0.1, 0.9, n), "status": ["ok"] * n,
                         "error": [""] * (n - 1) + [float("nan")]})


def test_every_odd_name_round_trips(tmp_path):
    table = _frame()
    table.loc[3, "score"] = float("nan")
    out = write_csv(table, tmp_path / "scores.csv")
    back = read_csv(out)
    assert list(back["path"]) == ODD_NAMES
    assert len(back) == len(table)
    np.testing.assert_array_equal(back["score"].to_numpy(), table["score"].to_numpy())  # exact floats, NaN kept
    assert back["error"].isna().tolist() == table["error"].replace("", np.nan).isna().tolist()


def test_non_utf8_name_is_written_as_its_raw_bytes(tmp_path):
    write_csv(pd.DataFrame({"path": [os.fsdecode(b"caf\xe9.jpg")]}), tmp_path / "a.csv")
    assert (tmp_path / "a.csv").read_bytes() == b"path\ncaf\xe9.jpg\n"


def test_carriage_return_switches_to_crlf_rows_and_is_quoted(tmp_path):
    write_csv(pd.DataFrame({"path": ["a\rb.jpg", "c.jpg"]}), tmp_path / "a.csv")
    assert (tmp_path / "a.csv").read_bytes() == b'path\r\n"a\rb.jpg"\r\nc.jpg\r\n'
    plain = write_csv(pd.DataFrame({"path": ["c.jpg"]}), tmp_path / "b.csv")
    assert open(plain, "rb").read() == b"path\nc.jpg\n"


def test_plain_pandas_splits_the_carriage_return_row(tmp_path):
    """Documents the defect fixed here: pandas' own writer leaves '\\r' unquoted and the row splits."""
    pd.DataFrame({"path": ["a\rb.jpg"], "score": [0.5]}).to_csv(tmp_path / "p.csv", index=False)
    assert len(pd.read_csv(tmp_path / "p.csv")) == 2


def test_real_files_with_odd_names_round_trip(tmp_path):
    made = []
    for i, name in enumerate(ODD_NAMES):
        p = tmp_path / f"{i}-{name}"
        p.write_bytes(b"x")
        made.append(os.path.join(os.fsdecode(tmp_path), f"{i}-{name}"))
    listed = sorted(os.path.join(os.fsdecode(tmp_path), n) for n in os.listdir(os.fsdecode(tmp_path)))
    write_csv(pd.DataFrame({"path": listed}), tmp_path / "list.csv")
    back = list(read_csv(tmp_path / "list.csv")["path"])
    assert back == listed
    assert all(os.path.exists(p) for p in back)


def test_lone_surrogate_is_refused_before_writing(tmp_path):
    target = tmp_path / "a.csv"
    target.write_text("old\n")
    with pytest.raises(ValueError, match=r"column 'path', row 2"):
        write_csv(pd.DataFrame({"path": ["ok.jpg", "bad\ud800.jpg"]}), target)
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["a.csv"]


def test_write_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    target = tmp_path / "a.csv"
    target.write_text("old\n")
    os.chmod(target, 0o640)
    write_csv(pd.DataFrame({"path": ["x"]}), target)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    assert target.read_text() == "path\nx\n"


def test_new_file_gets_the_umask_mode_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_csv(pd.DataFrame({"path": ["x"]}), tmp_path / "new.csv")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "new.csv").st_mode) == 0o644


def test_symlink_target_is_replaced_and_the_link_kept(tmp_path):
    real = tmp_path / "real.csv"
    real.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    write_csv(pd.DataFrame({"path": ["x"]}), link)
    assert link.is_symlink() and real.read_text() == "path\nx\n"


def test_exception_mid_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.csv"
    target.write_text("old\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target) as f:
            f.write("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["a.csv"]


def test_temp_left_by_a_killed_writer_is_cleaned_by_the_next_write(tmp_path):
    target = tmp_path / "scores.csv"
    script = _LOAD_CSVIO + textwrap.dedent(f"""
        import os, time
        with csvio.atomic_write({str(target)!r}) as f:
            f.write("partial")
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        temps = [n for n in os.listdir(tmp_path) if n.endswith(TMP_SUFFIX)]
        assert len(temps) == 1 and temps[0].startswith(".scores.csv.")
        write_csv(pd.DataFrame({"path": ["x"]}), target)  # the writer is alive: its temp is left alone
        assert temps[0] in os.listdir(tmp_path)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not target.exists() or target.read_text() == "path\nx\n"
    write_csv(pd.DataFrame({"path": ["y"]}), target)
    assert sorted(os.listdir(tmp_path)) == ["scores.csv"]
    assert target.read_text() == "path\ny\n"


def test_stdout_stream_gets_raw_bytes(tmp_path):
    script = _LOAD_CSVIO + ("; import os, sys, pandas as pd; "
                            "csvio.write_csv(pd.DataFrame({'path': [os.fsdecode(b'caf\\xe9.jpg')]}), sys.stdout)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True,
                         env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert out.stdout == b"path\ncaf\xe9.jpg\n"


def test_read_csv_accepts_a_bom_and_extra_text_columns(tmp_path):
    (tmp_path / "a.csv").write_bytes(b"\xef\xbb\xbfpath,overlay,score\nNA,null,\n")
    back = read_csv(tmp_path / "a.csv", text_columns=("path", "overlay"))
    assert back.loc[0, "path"] == "NA" and back.loc[0, "overlay"] == "null" and np.isnan(back.loc[0, "score"])
