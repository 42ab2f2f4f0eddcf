"""Untrusted HDF5 files for tests/test_hostile.sh: an fspo checkpoint and
dataset (made by the test), each changed one way fspo never writes, with
h5py. Every file is then re-sealed exactly as fspo seals (the test runs
test_ckpt --reseal), so only fspo's structure validation stands between it
and the readers. usage: make_h5.py DIR (DIR holds ck.h5 and data.h5)."""
import os, shutil, sys
import h5py, numpy as np

T = sys.argv[1]
CK, DS = f"{T}/ck.h5", f"{T}/data.h5"
made = []


def variant(name, src, change, **kw):
    out = f"{T}/{name}.h5"
    shutil.copy(src, out)
    with h5py.File(out, "r+", locking=False, **kw) as f:
        change(f)
    made.append(out)


def replace(path, **create):
    """Replaces dataset `path` by one made with create_dataset(**create), data kept unless given."""
    def change(f):
        old = f[path][()]
        attrs = dict(f[path].attrs)
        del f[path]
        if "data" not in create and "shape" not in create:
            create["data"] = old
        d = f.create_dataset(path, **create)
        for k, v in attrs.items():
            d.attrs[k] = v
    return change


TE = "model/tok_emb"
te = h5py.File(CK, "r", locking=False)[TE][()]
# ---- raw data elsewhere: external storage, links, virtual datasets ----
te.astype("<f4").tofile(f"{T}/ext_raw.bin")
variant("ck_external", CK, replace(TE, shape=te.shape, dtype="<f4", external=[(f"{T}/ext_raw.bin", 0, te.nbytes)]))
def extlink(f):
    del f[TE]
    f[TE] = h5py.ExternalLink(CK, "/" + TE)
variant("ck_extlink", CK, extlink)
def softlink(f):
    del f[TE]
    f[TE] = h5py.SoftLink("/model/final_norm")
variant("ck_softlink", CK, softlink)
def dangling(f):
    f["model/zzz_dangling"] = h5py.SoftLink("/nowhere")
variant("ck_dangling", CK, dangling)
def vds(f):
    lay = h5py.VirtualLayout(shape=te.shape, dtype="<f4")
    lay[:] = h5py.VirtualSource(CK, "/" + TE, shape=te.shape)
    attrs = dict(f[TE].attrs)
    del f[TE]
    d = f.create_virtual_dataset(TE, lay)
    for k, v in attrs.items():
        d.attrs[k] = v
variant("ck_vds", CK, vds)
# ---- filters and layouts ----
variant("ck_gzip", CK, replace(TE, compression="gzip"))
variant("ck_lzf", CK, replace(TE, compression="lzf"))  # h5py's filter 32000, unknown to fspo's libhdf5
variant("ck_shuffle", CK, replace(TE, shuffle=True, fletcher32=True))
variant("ck_chunked", CK, replace(TE, chunks=(1, te.shape[1])))
variant("ck_hugechunk", CK, replace(TE, shape=te.shape, dtype="<f4", maxshape=(None, None), chunks=(1 << 24, 32)))
variant("ck_compact", CK, replace("model/final_norm", shape=(32,), dtype="<f4",
                                  **{"dcpl": (lambda p: (p.set_layout(h5py.h5d.COMPACT), p)[1])(h5py.h5p.create(h5py.h5p.DATASET_CREATE))}))
# ---- absurd shapes ----
variant("ck_hugedims", CK, replace(TE, shape=(1 << 40, 32), dtype="<f4"))
variant("ck_rank5", CK, replace(TE, data=te.reshape(1, 1, 1, *te.shape)))
variant("ck_scalar", CK, replace(TE, data=np.float32(1)))
variant("ck_empty", CK, replace(TE, shape=(0, 32), dtype="<f4"))
# ---- wrong datatypes ----
variant("ck_string", CK, replace(TE, data=np.array([b"x" * 8] * te.shape[0])))
variant("ck_vlenstr", CK, replace(TE, data=np.array(["x"] * te.shape[0], dtype=h5py.string_dtype())))
variant("ck_compound", CK, replace(TE, data=np.zeros(te.shape[0], dtype=[("a", "<f4"), ("b", "<f4")])))
variant("ck_bigendian", CK, replace(TE, data=te.astype(">f4")))
variant("ck_float64", CK, replace(TE, data=te.astype("<f8")))
variant("ck_int64", CK, replace(TE, data=te.astype("<i8")))
variant("ck_float16", CK, replace(TE, data=te.astype("<f2")))
variant("ck_enum", CK, replace(TE, data=np.zeros(te.shape, "u1"), dtype=h5py.enum_dtype({"a": 0, "b": 1}, basetype="u1")))
variant("ck_named_type", CK, lambda f: f.__setitem__("mytype", np.dtype("<f4")))
def group_for_tensor(f):
    del f[TE]
    f.create_group(TE)
variant("ck_group_tensor", CK, group_for_tensor)
def hardlink_loop(f):
    f["model/zzz_loop"] = f["model"]
variant("ck_loop", CK, hardlink_loop)
# ---- attributes ----
# past 64 KiB an attribute needs dense storage: a new group (version-2 object header) holds it
variant("ck_attr_huge", CK, lambda f: f.create_group("extra").attrs.__setitem__("junk", np.zeros(9 << 20, "<i8")), libver="latest")
variant("ck_attr_bigstr", CK, lambda f: f.create_group("extra").attrs.__setitem__("text", np.bytes_(b"x" * (2 << 20))), libver="latest")
variant("ck_attr_2d", CK, lambda f: f.attrs.__setitem__("grid", np.zeros((2, 3), "<i8")))
variant("ck_attr_ref", CK, lambda f: f.attrs.__setitem__("ref", f["model"].ref))
variant("ck_attr_vlen", CK, lambda f: f.attrs.create("seq", [np.arange(3, dtype="<i4"), np.arange(2, dtype="<i4")],
                                                          dtype=h5py.vlen_dtype("<i4")))
variant("ck_attr_bigendian", CK, lambda f: f.attrs.__setitem__("step", np.array(2, ">i8")))
variant("ck_attr_string_step", CK, lambda f: f.attrs.__setitem__("step", "two"))
variant("ck_attr_shape_float", CK, lambda f: f.attrs.__setitem__("model_shape", np.array([264, 32, 2, 4, 96, 256], "<f8")))
# ---- datasets ----
variant("ds_external", DS, (lambda t: (t.tofile(f"{T}/ext_tok.bin"),
        replace("tokens", shape=t.shape, dtype="<u2", external=[(f"{T}/ext_tok.bin", 0, t.nbytes)]))[1])(
        h5py.File(DS, "r", locking=False)["tokens"][()].astype("<u2")))
def ds_extlink(f):
    del f["users/split"]
    f["users/split"] = h5py.ExternalLink(DS, "/users/split")
variant("ds_extlink", DS, ds_extlink)
variant("ds_gzip", DS, replace("tokens", compression="gzip"))
variant("ds_tokens_be", DS, lambda f: replace("tokens", data=f["tokens"][()].astype(">u2"))(f))
variant("ds_tokens_i64", DS, lambda f: replace("tokens", data=f["tokens"][()].astype("<i8"))(f))
variant("ds_tokens_u16", DS, lambda f: replace("tokens", data=f["tokens"][()].astype("<u2"))(f))
variant("ds_pairs_f64", DS, lambda f: replace("pairs/prompt", data=f["pairs/prompt"][()].astype("<f8"))(f))
variant("ds_ids_fixed", DS, lambda f: replace("users/id", data=np.array([s.encode() for s in f["users/id"].asstr()[()]]))(f))
variant("ds_ids_float", DS, lambda f: replace("users/id", data=np.zeros(f["users/id"].shape[0], "<f4"))(f))
variant("ck_bigshape", CK, lambda f: f.attrs.__setitem__("model_shape", np.array([264, 4096, 8, 32, 0, 256], "<i8")))
variant("ds_hugecount", DS, lambda f: f.attrs.__setitem__("n_tokens", np.int64(1 << 36)))
variant("ds_tokens_rank3", DS, lambda f: replace("tokens", data=f["tokens"][()].reshape(1, 1, -1))(f))
variant("ds_split_vds", DS, lambda f: (lambda n: (
    (lambda lay: (lay.__setitem__(slice(None), h5py.VirtualSource(DS, "/users/split", shape=(n,))),
                  f.__delitem__("users/split"), f.create_virtual_dataset("users/split", lay)))(h5py.VirtualLayout(shape=(n,), dtype="u1"))))(
    f["users/split"].shape[0]))
# ---- bfloat16 weights (fspo model strip --bf16: chunked, shuffle, deflate) made wrong ----
def bf16_type():
    t = h5py.h5t.IEEE_F32LE.copy()
    t.set_fields(15, 7, 8, 0, 7)
    t.set_precision(16)
    t.set_size(2)
    t.set_ebias(127)
    return t
def bf16_tensor(shape, rows=None, chunks=None):
    """tok_emb as fspo's bf16 form; only `rows` rows written (None: all)."""
    def change(f):
        attrs = dict(f[TE].attrs)
        del f[TE]
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk(chunks or (1, shape[1]))
        dcpl.set_shuffle()
        dcpl.set_deflate(6)
        ds = h5py.h5d.create(f.id, TE.encode(), bf16_type(), h5py.h5s.create_simple(shape), dcpl)
        if rows:
            src = te[:rows] if rows <= te.shape[0] else np.resize(te, (rows, shape[1]))
            half = (src.astype("<f4").view("<u4") >> 16).astype("<u2")
            ms = h5py.h5s.create_simple(half.shape)
            fs = ds.get_space()
            fs.select_hyperslab((0, 0), half.shape)
            ds.write(ms, fs, half, mtype=bf16_type())
        d = f[TE]
        for k, v in attrs.items():
            d.attrs[k] = v
    return change
# two chunks of 2^18 values (fspo's smallest), only the first written
variant("ck_bf16_hole", CK, bf16_tensor((1 << 14, te.shape[1]), rows=1 << 13, chunks=(1 << 13, te.shape[1])))
variant("ck_bf16_bomb", CK, bf16_tensor((1 << 34, te.shape[1]), chunks=(1 << 15, te.shape[1])))  # no data at all
variant("ck_bf16_tinychunks", CK, bf16_tensor((1 << 22, te.shape[1]), chunks=(1, 1)))  # 2^27 chunks to walk
def corrupt_chunk(src, out):
    """a bf16 tok_emb whose first chunk's deflated bytes are overwritten"""
    shutil.copy(src, out)
    with h5py.File(out, "r+", locking=False) as f:
        bf16_tensor(te.shape, rows=te.shape[0], chunks=te.shape)(f)
        info = f[TE].id.get_chunk_info(0)
    raw = bytearray(open(out, "rb").read())
    mid = info.byte_offset + info.size // 2
    raw[mid:mid + 16] = b"\xff" * 16
    open(out, "wb").write(raw)
    made.append(out)
corrupt_chunk(CK, f"{T}/ck_bf16_garbled.h5")
# Inputs found by fuzz_h5file that crash libhdf5 1.10.8 (the isolated
# validation child dies; fspo reports it). (1) The first object of the
# first global heap collection (the bytes of the vlen string attribute
# 'format') claims 8 TiB: H5HG_read copies past the heap (SIGSEGV).
for name, src in (("ds_heap", DS), ("ck_heap", CK)):
    raw = bytearray(open(src, "rb").read())
    at = raw.find(b"GCOL")
    assert at > 0 and raw[at + 24: at + 32] != bytes(8), "no global heap object where expected"
    raw[at + 29] = 8  # byte 5 of the object's 8-byte size
    open(f"{T}/{name}.h5", "wb").write(raw)
    made.append(f"{T}/{name}.h5")
# (2) The dataset's integer attribute 'seed' whose datatype claims 169
# bytes instead of 8: H5Aiterate2 reads past its buffer (under ASan it dies
# closing the table; the release build returns an error)
raw = bytearray(open(DS, "rb").read())
at = raw.find(b"seed\x00\x00\x00\x00\x10")
assert at > 0 and raw[at + 12] == 8, "attribute 'seed' not where expected"
raw[at + 12] = 169
open(f"{T}/ds_h5crash.h5", "wb").write(raw)
made.append(f"{T}/ds_h5crash.h5")
print("\n".join(made))
