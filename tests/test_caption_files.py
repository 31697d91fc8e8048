"""Caption files are split as SCAN/SGRAF split them, by every reader of the package.

SCAN (kuanghuei/SCAN data.py) and SGRAF (Paranioar/SGRAF data.py) read ``{split}_caps.txt`` with
``for line in open(path, 'rb'): captions.append(line.strip())``: lines end at b"\\n" only, each is
stripped of ASCII whitespace, blank lines are captions. The expected counts below follow from that
rule by hand; ``_scan_oracle`` is that loop, written out, as a second check.
"""
import numpy as np
import pytest

from vsl_ext import CaptionIndex
from vsl_ext.caption_files import read_scan_captions
from vsl_ext.harness.data import PrecompSplit, Vocabulary, read_captions

BASE = ["a dog runs", "a cat sits", "two birds", "a red car", "a man walks",
        "a bus stops", "three cows", "a kite flies", "the sea", "a green tree",
        "a girl reads", "an old boat", "a white horse", "a small child", "a long train"]


def _scan_oracle(path):
    captions = []
    with open(path, "rb") as f:
        for line in f:
            captions.append(line.strip().decode("utf-8"))
    return captions


def _write(tmp_path, data: bytes, name="test_caps.txt"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _with(sep: str, positions=(1, 6, 12)):
    """BASE with ``sep`` inside the captions at ``positions`` (between two of their words)."""
    caps = list(BASE)
    for p in positions:
        words = caps[p].split(" ", 1)
        caps[p] = words[0] + sep + words[1]
    return caps


# separator put inside 3 of the 15 captions -> number of lines SCAN reads
INSIDE = {
    "U+2028 line separator": ("\u2028", 15),
    "U+2029 paragraph separator": ("\u2029", 15),
    "form feed": ("\x0c", 15),
    "vertical tab": ("\x0b", 15),
    "lone CR": ("\r", 15),
    "NEL U+0085": ("\x85", 15),
    "file/group/record separators": ("\x1c\x1d\x1e", 15),
}


@pytest.mark.parametrize("case", sorted(INSIDE))
def test_separators_inside_a_caption_do_not_split_it(tmp_path, case):
    sep, expected = INSIDE[case]
    caps = _with(sep)
    path = _write(tmp_path, ("\n".join(caps) + "\n").encode("utf-8"))
    got = read_scan_captions(path)
    assert len(got) == expected == 15
    assert got == _scan_oracle(path) == caps       # kept inside, not stripped (not at the ends)
    assert len(caps[1].splitlines()) > 1            # what the old reader (str.splitlines) did wrong
    index = CaptionIndex.from_scan_file(path, captions_per_image=5)
    assert (index.num_images, index.num_captions) == (3, 15)
    np.save(tmp_path / "test_ims.npy", np.zeros((3, 2, 4), np.float32))
    split = PrecompSplit(str(tmp_path), "test", captions_per_image=5)
    assert (split.num_images, split.num_captions, split.captions) == (3, 15, caps)


def test_separators_at_the_ends_of_a_line_are_stripped_like_bytes_strip(tmp_path):
    # bytes.strip() removes b" \t\n\r\x0b\x0c" only; U+2028 and NBSP at the ends stay
    lines = [b"\x0c\x0ba dog\r", b" \ta cat\t ", b"\xe2\x80\xa8two birds\xc2\xa0"]
    path = _write(tmp_path, b"\n".join(lines) + b"\n")
    assert read_scan_captions(path) == _scan_oracle(path) == ["a dog", "a cat", "\u2028two birds\u00a0"]


def test_lone_cr_gives_scans_line_count(tmp_path):
    # 10 lines; one of them holds a lone CR (old reader: 11)
    caps = [f"caption {i}" for i in range(10)]
    caps[4] = "left part\rright part"
    path = _write(tmp_path, ("\n".join(caps) + "\n").encode())
    assert len(read_scan_captions(path)) == 10
    assert read_scan_captions(path) == _scan_oracle(path)


def test_crlf_files_read_like_lf_files(tmp_path):
    lf = _write(tmp_path, ("\n".join(BASE) + "\n").encode(), "lf.txt")
    crlf = _write(tmp_path, ("\r\n".join(BASE) + "\r\n").encode(), "crlf.txt")
    assert read_scan_captions(crlf) == read_scan_captions(lf) == BASE
    assert len(read_scan_captions(crlf)) == 15
    assert CaptionIndex.from_scan_file(crlf).num_captions == 15


def test_no_trailing_newline(tmp_path):
    path = _write(tmp_path, "\n".join(BASE).encode())
    assert read_scan_captions(path) == _scan_oracle(path) == BASE     # 15, the last line counts


@pytest.mark.parametrize("blank, expected", [("\n", 16), ("\n\n", 17), ("\r\n", 16), ("  \n", 16)])
def test_trailing_blank_lines_are_captions_and_are_rejected_by_every_reader(tmp_path, blank, expected):
    path = _write(tmp_path, ("\n".join(BASE) + "\n" + blank).encode())
    got = read_scan_captions(path)
    assert len(got) == expected and got == _scan_oracle(path)
    assert got[15:] == [""] * (expected - 15)
    with pytest.raises(ValueError, match="blank"):
        CaptionIndex.from_scan_file(path, captions_per_image=5)
    np.save(tmp_path / "test_ims.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="blank"):
        PrecompSplit(str(tmp_path), "test", captions_per_image=5)


def test_blank_line_inside_is_an_empty_caption(tmp_path):
    caps = list(BASE)
    caps[7] = ""
    path = _write(tmp_path, ("\n".join(caps) + "\n").encode())
    assert read_scan_captions(path) == caps
    assert CaptionIndex.from_scan_file(path).num_captions == 15


def test_empty_file(tmp_path):
    path = _write(tmp_path, b"")
    assert read_scan_captions(path) == []
    with pytest.raises(ValueError, match="0 caption lines"):
        CaptionIndex.from_scan_file(path)


def test_utf8_bom_is_dropped_and_changes_no_count(tmp_path):
    # decision (documented in vsl_ext.caption_files): SCAN keeps the BOM glued to the first word;
    # we drop it. The count is the same either way.
    path = _write(tmp_path, b"\xef\xbb\xbf" + ("\n".join(BASE) + "\n").encode())
    got = read_scan_captions(path)
    assert got == BASE
    assert len(_scan_oracle(path)) == 15 and _scan_oracle(path)[0] == "\ufeff" + BASE[0]


def test_invalid_utf8_names_the_file_and_line(tmp_path):
    lines = [c.encode() for c in BASE]
    lines[8] = b"  the s\xffea"
    path = _write(tmp_path, b"\n".join(lines) + b"\n")
    with pytest.raises(ValueError, match=r"test_caps\.txt, line 9: not valid utf-8 at byte 7"):
        read_scan_captions(path)
    with pytest.raises(ValueError, match="line 9"):
        CaptionIndex.from_scan_file(path)


def test_other_ascii_compatible_encodings_and_bad_ones(tmp_path):
    path = _write(tmp_path, "caf\xe9 au lait\nna\xefve\n".encode("latin-1"))
    assert read_scan_captions(path, encoding="latin-1") == ["caf\xe9 au lait", "na\xefve"]
    with pytest.raises(ValueError, match="line 1"):
        read_scan_captions(path)
    with pytest.raises(ValueError, match="ASCII-compatible"):
        read_scan_captions(path, encoding="utf-16")
    with pytest.raises(ValueError, match="unknown"):
        read_scan_captions(path, encoding="no-such-codec")
    with pytest.raises(FileNotFoundError, match="caption file not found"):
        read_scan_captions(tmp_path / "missing.txt")


def test_one_reader_everywhere(tmp_path):
    """The harness's reader and the vocabulary built from it see SCAN's lines."""
    assert read_captions is read_scan_captions
    caps = _with("\u2028", positions=(0,))
    path = _write(tmp_path, ("\r\n".join(caps) + "\r\n").encode())
    vocab = Vocabulary.build(read_captions(path))
    assert "dog" in vocab and "runs" in vocab
