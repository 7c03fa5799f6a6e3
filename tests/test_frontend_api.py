"""tl.compile's inputs and the parser's set-up: paths, constants, caches, strict grammar."""
import glob
import os
import pickle

import numpy as np
import pytest

import tvm_lite as tl
from conftest import EXAMPLES
from tvm_lite.frontend import compile as compile_module
from tvm_lite.frontend import parser as parser_module
from tvm_lite.frontend.parser import parse

QMATMUL_PATH = os.path.join(EXAMPLES, "qmatmul.tl")
COPY = """\
@kernel(warps=4)
def copy[R: int = 64](n: i32, x: f16[n, 64], y: f16[n, 64]):
    grid(cdiv(n, R))
    buf = shared(f16, [R, 64], layout=row_major(R, 64).swizzle(3, 3, 3))
    copy_async(buf, x, [block.x * R, 0])
    wait_async(0)
    barrier()
    store(y, load_shared(buf), [block.x * R, 0])
"""


def test_grammar_is_clean_under_lark_strict_mode():
    # strict=True refuses terminal collisions and LALR conflicts instead of
    # resolving them silently; lark needs interegular to check collisions.
    pytest.importorskip("interegular")
    from lark import Lark
    Lark(parser_module._GRAMMAR.read_text(), cache=False, **parser_module._options(True))


def test_grammar_tables_are_cached_in_the_user_cache_dir():
    parser_module.get_parser()
    files = glob.glob(os.path.join(os.environ["TL_CACHE_DIR"], "tl_grammar_*.lark.cache"))
    assert files, "no grammar cache file was written"


def test_a_corrupt_grammar_cache_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("TL_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(parser_module, "_parser", None)
    text = parser_module._GRAMMAR.read_text()
    path = parser_module._cache_path(text, parser_module._strict_available())
    with open(path, "wb") as f:
        f.write(b"not a pickle\n\x80\x04garbage")
    assert parse(open(QMATMUL_PATH).read()).kernels[0].name == "qmatmul"


def test_an_unwritable_cache_dir_means_no_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("TL_CACHE_DIR", str(blocker / "sub"))   # cannot be created
    assert parser_module._cache_path("grammar", False) is False


def test_compile_reads_paths_as_str_and_pathlib(tmp_path):
    import pathlib
    a = tl.compile(QMATMUL_PATH, target="interp")
    b = tl.compile(pathlib.Path(QMATMUL_PATH), target="interp")
    assert a.source("vm") == b.source("vm")
    other = tmp_path / "kernel.txt"          # any existing file, whatever its suffix
    other.write_text(COPY)
    assert "copy" in tl.compile(str(other), target="interp").kernels


def test_unreadable_sources_are_tl_errors(tmp_path):
    binary = tmp_path / "bad.tl"
    binary.write_bytes(b"\xff\xfe@kernel")
    with pytest.raises(tl.TLError, match="not UTF-8"):
        tl.compile(binary)
    with pytest.raises(tl.TLError, match="cannot read"):
        tl.compile(tmp_path)                 # a directory
    with pytest.raises(tl.TLError, match="cannot read"):
        tl.compile("no\x00such.tl")
    with pytest.raises(tl.TLError, match="source text or a path"):
        tl.compile(b"@kernel(warps=4)")


def test_parse_cache_reuses_and_is_bounded(monkeypatch):
    monkeypatch.setattr(compile_module, "_PARSE_CACHE_SIZE", 3)
    monkeypatch.setattr(compile_module, "_parse_cache", type(compile_module._parse_cache)())
    first = compile_module.parse_cached(COPY, "<string>")
    assert compile_module.parse_cached(COPY, "<string>") is first
    for i in range(5):
        compile_module.parse_cached(COPY.replace("copy[", f"copy{i}["), "<string>")
    assert len(compile_module._parse_cache) == 3
    assert (COPY, "<string>") not in compile_module._parse_cache


def test_the_file_name_is_part_of_the_parse_cache_key(tmp_path):
    # The same text from two files: each error names its own file.
    bad = "@kernel(warps=4)\ndef k(n: i32):\n    t = zeros(f32, [0])\n"
    for name in ("a.tl", "b.tl"):
        path = tmp_path / name
        path.write_text(bad)
        with pytest.raises(tl.TLTypeError) as info:
            tl.compile(path, target="interp")
        assert str(info.value).startswith(f"{path}:3:")


def test_constants_accept_numpy_scalars_and_dtype_objects():
    mod = tl.compile(COPY, target="interp", R=np.int64(32))
    assert dict(mod.program.kernels[0].constants)["R"] == 32
    mod = tl.compile(QMATMUL_PATH, target="interp", WT=tl.dtype("i5"), BN=np.int32(64))
    assert "global i5[k, n]" in mod.source("vm")
    with pytest.raises(tl.TLTypeError, match="'R' is an int, got the bool True"):
        tl.compile(COPY, target="interp", R=True)


def test_shared_layouts_reach_the_vm_ir_and_run():
    mod = tl.compile(COPY, target="interp")
    text = mod.source("vm")
    assert "shared f16[64, 64] @SharedLayout(shape=[64, 64], strides=[64, 1], swizzle=(3, 3, 3))" in text
    x = np.random.default_rng().standard_normal((100, 64)).astype(np.float16)
    y = np.zeros_like(x)
    mod.copy(100, x, y)
    np.testing.assert_array_equal(x, y)


def test_kernel_names_and_module_listing():
    mod = tl.compile(COPY + "\n" + open(QMATMUL_PATH).read(), target="interp")
    assert [k.name for k in mod] == ["copy", "qmatmul"]
    assert mod.copy is mod["copy"]
    assert "def copy[R: int = 64]" in mod.source("ast")


@pytest.mark.parametrize("payload", [b"\x80\x05not a pickle", pickle.dumps("not an AST")])
def test_an_unusable_ast_cache_entry_is_parsed_again(payload, monkeypatch, tmp_path):
    from tvm_lite.runtime.cache import CompileCache
    monkeypatch.setattr(compile_module, "_parse_cache", type(compile_module._parse_cache)())
    monkeypatch.setattr(compile_module, "_ast_cache", CompileCache(tmp_path))
    key = compile_module._ast_key(COPY, "<string>")
    compile_module._ast_cache.put(key, payload)
    assert compile_module.parse_cached(COPY, "<string>") == parse(COPY, "<string>")
    # ... and the entry now holds the AST, which a new process loads without parsing.
    compile_module._ast_cache.clear_memory()
    assert compile_module._load_ast(key) == parse(COPY, "<string>")
