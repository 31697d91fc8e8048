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


# ------------------------------------------------------------------------------------------------
# Files as other tools write them (issue 21, item 4): the same groups as the plain file, or an error
# naming the file, the line and what was expected. Oracle: Python's csv.DictReader on the file
# opened with utf-8-sig and newline="" (what a csv user reads), and SCAN's loop above for caption files.

CSV_ROWS = [("1.jpg", "a dog runs"), ("1.jpg", "a brown dog, running"), ("2.jpg", 'a "red" car'),
            ("2.jpg", "caf\xe9 au lait"), ("3.jpg", "two birds")]


def _csv_text(newline="\n", quote_all=False):
    def field(x):
        return '"' + x.replace('"', '""') + '"' if quote_all or any(c in x for c in ',"') else x
    return "image,caption" + newline + "".join(field(i) + "," + field(c) + newline for i, c in CSV_ROWS)


def _csv_oracle(path):
    import csv

    groups = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        for row in csv.DictReader(f):
            groups.setdefault(row["image"], []).append(row["caption"])
    return groups


ODD_CSV = {
    "byte order mark": lambda: b"\xef\xbb\xbf" + _csv_text().encode(),
    "CRLF line ends": lambda: _csv_text("\r\n").encode(),
    "trailing blank line": lambda: (_csv_text() + "\n").encode(),
    "trailing blank lines, CRLF": lambda: (_csv_text("\r\n") + "\r\n\r\n").encode(),
    "blank and whitespace lines between rows": lambda: _csv_text().replace("\n2.jpg", "\n\n   \n2.jpg").encode(),
    "every field quoted": lambda: _csv_text(quote_all=True).encode(),
    "no newline at the end": lambda: _csv_text().rstrip("\n").encode(),
    "stray whitespace in header and names": lambda: _csv_text().replace("image,caption", " image , caption ")
    .replace("1.jpg,", "1.jpg ,").encode(),
}


@pytest.mark.parametrize("case", sorted(ODD_CSV))
def test_odd_csv_files_give_the_plain_files_groups(tmp_path, case):
    from vsl_ext.harness.prepare_images import read_caption_csv

    plain = _write(tmp_path, _csv_text().encode(), "plain.csv")
    odd = _write(tmp_path, ODD_CSV[case](), "odd.csv")
    expected = _csv_oracle(plain)
    assert expected == {"1.jpg": ["a dog runs", "a brown dog, running"], "2.jpg": ['a "red" car', "caf\xe9 au lait"],
                        "3.jpg": ["two birds"]}
    assert dict(read_caption_csv(str(odd))) == dict(read_caption_csv(str(plain))) == expected


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1", "utf-16"])
def test_csv_in_another_encoding_reads_with_its_encoding_and_is_named_without(tmp_path, encoding):
    from vsl_ext.harness.prepare_images import read_caption_csv

    path = _write(tmp_path, _csv_text("\r\n").encode(encoding), "enc.csv")
    assert dict(read_caption_csv(str(path), encoding)) == _csv_oracle(_write(tmp_path, _csv_text().encode(), "p.csv"))
    expect = r"enc\.csv, line 1: a UTF-16 file" if encoding == "utf-16" else r"enc\.csv, line 5: not valid utf-8"
    with pytest.raises(ValueError, match=expect):
        read_caption_csv(str(path))


BAD_CSV = {
    "unquoted comma": ("image,caption\n1.jpg,a dog\n1.jpg,a dog, running\n", r"line 3: 3 fields, expected 2"),
    "missing caption": ("image,caption\n1.jpg,a dog\n2.jpg\n", r"line 3: 1 fields, expected 2"),
    "empty image name": ("image,caption\n1.jpg,a dog\n  ,a cat\n", r"line 3: empty image name"),
    "no header": ("1.jpg,a dog\n1.jpg,a cat\n", r"line 1: expected a CSV header holding 'image' and 'caption'"),
    "header after blank lines, wrong": ("\n\nfile,text\n1.jpg,a dog\n", r"line 3: expected a CSV header"),
    "header only": ("image,caption\r\n\r\n", r"holds no captions"),
    "empty file": ("", r"line 1: expected a CSV header"),
}


@pytest.mark.parametrize("case", sorted(BAD_CSV))
def test_bad_csv_files_name_the_file_line_and_expectation(tmp_path, case):
    from vsl_ext.harness.prepare_images import main as prepare_main
    from vsl_ext.harness.prepare_images import read_caption_csv

    text, message = BAD_CSV[case]
    path = _write(tmp_path, text.encode(), "bad.csv")
    with pytest.raises(ValueError, match=r"bad\.csv.*" + message):
        read_caption_csv(str(path))
    assert prepare_main(["--images", str(tmp_path), "--captions", str(path), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_utf16_caption_file_is_named(tmp_path):
    path = _write(tmp_path, ("\n".join(BASE) + "\n").encode("utf-16"))
    with pytest.raises(ValueError, match=r"test_caps\.txt, line 1: a UTF-16 file"):
        read_scan_captions(path)


def test_odd_caption_files_give_the_plain_files_groups(tmp_path):
    """BOM, CRLF, stray ASCII whitespace at the line ends, latin-1: the same captions, so the same
    image groups, through read_scan_captions and CaptionIndex.from_scan_file as the plain file."""
    plain = _write(tmp_path, ("\n".join(BASE) + "\n").encode(), "plain_caps.txt")
    variants = {"bom crlf": b"\xef\xbb\xbf" + ("\r\n".join(BASE) + "\r\n").encode(),
                "whitespace": ("\n".join(" \t" + c + "  \x0c" for c in BASE) + "\n").encode()}
    want = _scan_oracle(plain)
    ref = CaptionIndex.from_scan_file(plain).image_similarity(list(range(3))).numpy()
    for name, data in variants.items():
        path = _write(tmp_path, data, name.replace(" ", "_") + "_caps.txt")
        assert read_scan_captions(path) == want, name
        assert np.array_equal(CaptionIndex.from_scan_file(path).image_similarity(list(range(3))).numpy(), ref), name
    latin = _write(tmp_path, ("\n".join(BASE) + "\n").encode("latin-1"), "latin_caps.txt")
    assert read_scan_captions(latin, encoding="latin-1") == want


def test_vocabulary_files_with_a_bom_or_crlf_read_like_plain_ones(tmp_path):
    vocab = Vocabulary.build(BASE)
    vocab.save(str(tmp_path / "v.json"))
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "v.json").read_bytes())
    assert Vocabulary.load(str(tmp_path / "bom.json")).idx2word == vocab.idx2word
    (tmp_path / "bad.json").write_bytes((tmp_path / "v.json").read_bytes().replace(b"dog", b"d\xffg"))
    with pytest.raises(ValueError, match=r"bad\.json, line 1: not valid UTF-8"):
        Vocabulary.load(str(tmp_path / "bad.json"))

    from vsl_ext.harness.data.wordpiece import WordPieceVocabulary

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "dog", "##s"]
    files = {"plain": "\n".join(tokens) + "\n", "bom crlf": "\ufeff" + "\r\n".join(tokens) + "\r\n\r\n"}
    for name, data in files.items():
        folder = tmp_path / name.replace(" ", "_")
        folder.mkdir()
        (folder / "vocab.txt").write_bytes(data.encode())
        (folder / "tokenizer_config.json").write_bytes(b'\xef\xbb\xbf{"do_lower_case": false}')
        v = WordPieceVocabulary.from_pretrained_dir(str(folder))
        assert v.idx2word == tokens and v.do_lower_case is False, name
