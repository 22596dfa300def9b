"""The built-in converters on real files: TIFF (tifffile), RGB (Pillow), HDF5/NeXus
(h5py), NetCDF (netCDF4) and IDX, written as OpenVisus IDX or Zarr v3 and read back
with OpenVisus and zarr, value for value."""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

np = pytest.importorskip("numpy")
ov = pytest.importorskip("OpenVisus")
tifffile = pytest.importorskip("tifffile")
h5py = pytest.importorskip("h5py")
netCDF4 = pytest.importorskip("netCDF4")
zarr = pytest.importorskip("zarr")
Image = pytest.importorskip("PIL.Image")

from sclib.errors import ConversionError, InvalidInput  # noqa: E402
from sclib.pipeline.convert import (  # noqa: E402
    ConversionRequest,
    ConversionResult,
    converter_for,
)

RNG = np.random.default_rng(7)


def convert(
    tmp_path: Path,
    sensor: str,
    files: Sequence[str] | None = None,
    fmt: str = "idx",
    **params: Any,
) -> tuple[Path, ConversionResult, list[tuple[int, int, str]]]:
    """Run the sensor's converter on tmp_path/in into a fresh output folder."""
    inp = tmp_path / "in"
    if files is None:
        files = sorted(
            p.relative_to(inp).as_posix() for p in inp.rglob("*") if p.is_file()
        )
    out = (
        tmp_path
        / f"out-{sensor.replace(' ', '_')}-{fmt}-{len(list(tmp_path.iterdir()))}"
    )
    out.mkdir()
    seen: list[tuple[int, int, str]] = []
    converter = converter_for(sensor)
    assert converter is not None
    result = converter.convert(
        ConversionRequest(
            input_dir=inp,
            files=files,
            output_dir=out,
            sensor=sensor,
            params=params,
            output_format=fmt,
            progress=lambda d, t, m: seen.append((d, t, m)),
        )
    )
    return out, result, seen


def read_idx(path: Path) -> Any:
    return ov.LoadDataset(str(path)).read()


def block_flags(data_file: Path) -> list[int]:
    """The compression flags of every stored block of an IDX data file."""
    raw = data_file.read_bytes()
    flags = []
    end, offset = len(raw), 40  # headers run up to the first block's data
    while offset + 40 <= end:
        head = struct.unpack_from(">10I", raw, offset)
        if head[4]:
            flags.append(head[5] & 0x0F)
            end = min(end, head[2] | head[3] << 32)
        offset += 40
    return flags


@pytest.fixture
def inp(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    return folder


# -- TIFF ------------------------------------------------------------------------


def test_multipage_tiff_becomes_a_3d_idx_with_the_same_values(
    tmp_path: Path, inp: Path
) -> None:
    """A multi-page TIFF is one z-ordered volume; OpenVisus reads back every voxel
    unchanged, blocks are zip-compressed, and progress reaches the input's size."""
    vol = RNG.integers(0, 65535, (9, 33, 45), dtype=np.uint16)
    tifffile.imwrite(inp / "stack.tif", vol)
    out, result, seen = convert(tmp_path, "TIFF")
    assert result.entry_point == "visus.idx"
    assert result.inputs == ["stack.tif"]
    assert result.outputs == [
        {
            "name": "data",
            "path": "visus.idx",
            "shape": [9, 33, 45],
            "dtype": "uint16",
            "source": "stack.tif",
        }
    ]
    back = read_idx(out / "visus.idx")
    assert back.shape == vol.shape
    assert np.array_equal(back, vol)
    assert np.array_equal(read_idx(out / "visus.idx")[4], vol[4])  # z is axis 0
    flags = block_flags(out / "visus" / "0000.bin")
    assert flags and set(flags) == {0x03}
    assert "default_compression(zip)" in (out / "visus.idx").read_text()
    size = (inp / "stack.tif").stat().st_size
    assert seen[-1][:2] == (size, size)


def test_tiff_sequence_is_stacked_in_natural_order(tmp_path: Path, inp: Path) -> None:
    """Single-page TIFFs slice1..slice12 stack in number order (slice2 before
    slice10), whatever the listing order."""
    slices = [np.full((6, 8), i, dtype=np.int16) - i * 3 for i in range(1, 13)]
    for i, s in enumerate(slices, start=1):
        tifffile.imwrite(inp / f"slice{i}.tif", s)
    files = sorted(f"slice{i}.tif" for i in range(1, 13))  # plain string order
    out, result, _ = convert(tmp_path, "TIFF", files)
    back = read_idx(out / "visus.idx")
    assert np.array_equal(back, np.stack(slices))
    assert result.inputs[:3] == ["slice1.tif", "slice2.tif", "slice3.tif"]
    assert result.outputs[0]["shape"] == [12, 6, 8]


def test_single_page_tiff_is_2d(tmp_path: Path, inp: Path) -> None:
    """One page gives a 2D dataset, rows along y."""
    image = RNG.random((21, 34), dtype=np.float32)
    tifffile.imwrite(inp / "one.tiff", image)
    out, result, _ = convert(tmp_path, "tiff")  # sensor names ignore case
    assert result.outputs[0]["shape"] == [21, 34]
    assert np.array_equal(read_idx(out / "visus.idx"), image)


def test_small_slabs_give_the_same_idx_and_zarr(tmp_path: Path, inp: Path) -> None:
    """With 1 MiB slabs (32 slices at a time here, 3 slabs) the output equals the
    input: slabs line up in IDX and the Zarr pyramid levels are written in order."""
    vol = RNG.integers(0, 1000, (70, 128, 128), dtype=np.uint16)
    tifffile.imwrite(inp / "stack.tif", vol)
    out, _, seen = convert(tmp_path, "TIFF", slab_mib=1)
    assert np.array_equal(read_idx(out / "visus.idx"), vol)
    assert [m for _, _, m in seen if m.startswith("data:")] == [
        "data: 32/70",
        "data: 64/70",
        "data: 70/70",
    ]
    out, _, _ = convert(tmp_path, "TIFF", fmt="zarr", slab_mib=1, levels=3)
    group = zarr.open_group(str(out / "data.zarr"), mode="r")
    for k in range(3):
        f = 1 << k
        assert np.array_equal(group[str(k)][:], vol[::f, ::f, ::f]), k


def test_tiff_to_zarr_pyramid(tmp_path: Path, inp: Path) -> None:
    """Zarr output: a v3 group with levels 0..2, each every other sample of the one
    before, and OME-NGFF-style multiscales metadata with scale transforms."""
    vol = RNG.integers(0, 255, (7, 33, 45), dtype=np.uint8)
    tifffile.imwrite(inp / "stack.tif", vol)
    out, result, _ = convert(tmp_path, "TIFF", fmt="zarr", levels=3)
    assert result.entry_point == "data.zarr"
    assert [o["path"] for o in result.outputs] == [
        "data.zarr/0",
        "data.zarr/1",
        "data.zarr/2",
    ]
    assert result.outputs[1]["shape"] == [4, 17, 23]
    group = zarr.open_group(str(out / "data.zarr"), mode="r")
    assert group.metadata.zarr_format == 3
    for k in range(3):
        f = 1 << k
        assert np.array_equal(group[str(k)][:], vol[::f, ::f, ::f])
    ms = group.attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert ms["datasets"][2]["coordinateTransformations"][0]["scale"] == [4.0] * 3


def test_default_pyramid_stops_near_256(tmp_path: Path, inp: Path) -> None:
    """Without ``levels``, halving stops once the largest side is <= 256."""
    tifffile.imwrite(inp / "wide.tif", np.zeros((3, 600), dtype=np.uint8))
    _, result, _ = convert(tmp_path, "TIFF", fmt="zarr")
    assert [o["shape"] for o in result.outputs] == [[3, 600], [2, 300], [1, 150]]


# -- RGB --------------------------------------------------------------------------


def test_tiff_rgb_becomes_a_3_component_field(tmp_path: Path, inp: Path) -> None:
    """RGB TIFF pages become a uint8[3] field with the same colours, channel last."""
    rgb = RNG.integers(0, 255, (2, 10, 12, 3), dtype=np.uint8)
    tifffile.imwrite(inp / "colour.tif", rgb, photometric="rgb")
    out, result, _ = convert(tmp_path, "TIFF RGB")
    assert result.outputs[0]["dtype"] == "uint8[3]"
    assert result.outputs[0]["shape"] == [2, 10, 12, 3]
    assert np.array_equal(read_idx(out / "visus.idx"), rgb)


def test_pillow_rgb_png_stack(tmp_path: Path, inp: Path) -> None:
    """PNG images (one RGBA) read by Pillow stack into uint8[3]; alpha dropped."""
    a = RNG.integers(0, 255, (9, 11, 3), dtype=np.uint8)
    b = RNG.integers(0, 255, (9, 11, 4), dtype=np.uint8)
    Image.fromarray(a).save(inp / "img1.png")
    Image.fromarray(b, mode="RGBA").save(inp / "img2.png")
    out, result, _ = convert(tmp_path, "RGB")
    assert result.outputs[0]["dtype"] == "uint8[3]"
    assert np.array_equal(read_idx(out / "visus.idx"), np.stack([a, b[..., :3]]))
    out, result, _ = convert(tmp_path, "RGB", ["img1.png"], fmt="zarr", levels=2)
    group = zarr.open_group(str(out / "data.zarr"), mode="r")
    assert np.array_equal(group["1"][:], a[::2, ::2])
    assert group.attrs["ome"]["multiscales"][0]["axes"][-1]["type"] == "channel"


# -- HDF5 / NeXus -------------------------------------------------------------------


def write_nexus(path: Path, signal: Any) -> None:
    with h5py.File(path, "w") as f:
        f.attrs["default"] = "entry"
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.attrs["default"] = "data"
        data = entry.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        data.attrs["signal"] = "counts"
        data.create_dataset("counts", data=signal, chunks=True)
        f["entry/bigger_but_not_default"] = np.zeros((40, 40, 40), dtype=np.uint8)
        f["entry/label"] = "text is not numeric"


def test_nexus_default_signal_4d(tmp_path: Path, inp: Path) -> None:
    """4D_NEXUS: the NeXus default chain picks the signal (not the largest
    dataset); a 4-D signal becomes a 4-D IDX with the same values."""
    signal = RNG.random((3, 4, 5, 6)).astype(np.float32)
    write_nexus(inp / "scan.nxs", signal)
    out, result, _ = convert(tmp_path, "4D_NEXUS")
    assert "/entry/data/counts" in result.note and "NeXus default" in result.note
    assert result.outputs[0]["shape"] == [3, 4, 5, 6]
    assert np.array_equal(read_idx(out / "visus.idx"), signal)


def test_hdf5_dataset_param_and_largest_fallback(tmp_path: Path, inp: Path) -> None:
    """params['dataset'] picks the path; without NeXus attributes the largest
    numeric dataset is taken; big-endian and bool data are written natively."""
    big_endian = np.arange(5 * 7, dtype=">i4").reshape(5, 7)
    with h5py.File(inp / "plain.h5", "w") as f:
        f["small"] = big_endian
        f["group/largest"] = (np.arange(6 * 8 * 10) % 2 == 0).reshape(6, 8, 10)
    out, result, _ = convert(tmp_path, "HDF5", dataset="/small")
    assert "given by the 'dataset' parameter" in result.note
    back = read_idx(out / "visus.idx")
    assert back.dtype == np.int32 and np.array_equal(back, big_endian)
    out, result, _ = convert(tmp_path, "HDF5")
    assert "/group/largest" in result.note and "largest" in result.note
    assert result.outputs[0]["dtype"] == "uint8"
    expected = (np.arange(6 * 8 * 10) % 2 == 0).reshape(6, 8, 10).astype(np.uint8)
    assert np.array_equal(read_idx(out / "visus.idx"), expected)


def test_hdf5_to_zarr(tmp_path: Path, inp: Path) -> None:
    """HDF5 -> Zarr: level 0 equals the dataset, level 1 every other voxel."""
    signal = RNG.integers(-500, 500, (10, 12, 14), dtype=np.int16)
    write_nexus(inp / "scan.h5", signal)
    out, _, _ = convert(tmp_path, "HDF5", fmt="zarr", levels=2)
    group = zarr.open_group(str(out / "data.zarr"), mode="r")
    assert np.array_equal(group["0"][:], signal)
    assert np.array_equal(group["1"][:], signal[::2, ::2, ::2])


def test_hdf5_unknown_dataset_lists_choices(tmp_path: Path, inp: Path) -> None:
    """An unknown dataset path is refused naming the file and the numeric
    datasets there are."""
    write_nexus(inp / "scan.h5", np.zeros((2, 3), dtype=np.uint8))
    with pytest.raises(ConversionError, match=r"scan\.h5 has no dataset '/nope'") as e:
        convert(tmp_path, "HDF5", dataset="/nope")
    assert "/entry/data/counts (2x3 uint8)" in str(e.value)


def test_every_hdf5_file_of_a_dataset_is_converted(tmp_path: Path, inp: Path) -> None:
    """A dataset of several HDF5 files gets one output per file (named after it,
    in natural order), each with that file's chosen dataset; ``file`` picks one,
    which then is ``visus.idx`` as for a single file."""
    first = RNG.integers(0, 1000, (4, 5, 6), dtype=np.uint16)
    second = RNG.random((3, 7)).astype(np.float32)
    (inp / "run").mkdir()
    write_nexus(inp / "run" / "scan_2.h5", first)
    with h5py.File(inp / "run" / "scan_10.h5", "w") as f:
        f["plain/image"] = second
    out, result, _ = convert(tmp_path, "HDF5")
    assert [(o["name"], o["path"]) for o in result.outputs] == [
        ("run_scan_2", "run_scan_2.idx"),
        ("run_scan_10", "run_scan_10.idx"),
    ]
    assert result.entry_point == "run_scan_2.idx"
    assert result.inputs == ["run/scan_2.h5", "run/scan_10.h5"]
    assert np.array_equal(read_idx(out / "run_scan_2.idx"), first)
    assert np.array_equal(read_idx(out / "run_scan_10.idx"), second)
    assert "run/scan_2.h5: HDF5 dataset /entry/data/counts" in result.note
    assert "run/scan_10.h5: HDF5 dataset /plain/image" in result.note
    out, result, _ = convert(tmp_path, "HDF5", file="run/scan_10.h5")
    assert result.inputs == ["run/scan_10.h5"]
    assert np.array_equal(read_idx(out / "visus.idx"), second)


# -- NetCDF -------------------------------------------------------------------------


def write_netcdf(path: Path) -> tuple[Any, Any]:
    temp = RNG.random((3, 10, 12)).astype(np.float32)
    pres = np.arange(120, dtype=np.int16).reshape(10, 12)
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("time", 3)
        ds.createDimension("lat", 10)
        ds.createDimension("lon", 12)
        ds.createVariable("lat", "f4", ("lat",))[:] = np.arange(10)
        ds.createVariable("temp", "f4", ("time", "lat", "lon"))[:] = temp
        v = ds.createVariable("pres", "i2", ("lat", "lon"), fill_value=-1)
        v.scale_factor = 0.5
        v.set_auto_scale(False)  # store these numbers as they are
        v[:] = pres
    return temp, pres


def test_netcdf_two_variables_to_idx(tmp_path: Path, inp: Path) -> None:
    """Every numeric variable with >= 2 dims gets its own <variable>.idx with the
    stored values (no scaling); the 1-D coordinate is skipped."""
    temp, pres = write_netcdf(inp / "climate.nc")
    out, result, _ = convert(tmp_path, "NETCDF")
    assert result.entry_point == "temp.idx"
    assert [(o["name"], o["path"]) for o in result.outputs] == [
        ("temp", "temp.idx"),
        ("pres", "pres.idx"),
    ]
    assert np.array_equal(read_idx(out / "temp.idx"), temp)
    assert np.array_equal(read_idx(out / "pres.idx"), pres)
    assert "scaling not applied: pres" in result.note


def test_every_netcdf_file_of_a_dataset_is_converted(tmp_path: Path, inp: Path) -> None:
    """Several NetCDF files: one output per variable of each file, named
    ``<file stem>_<variable>``; Zarr too."""
    temp_a, pres_a = write_netcdf(inp / "a.nc")
    temp_b, _ = write_netcdf(inp / "b.nc")
    out, result, _ = convert(tmp_path, "NETCDF")
    assert [o["name"] for o in result.outputs] == [
        "a_temp",
        "a_pres",
        "b_temp",
        "b_pres",
    ]
    assert result.inputs == ["a.nc", "b.nc"]
    assert np.array_equal(read_idx(out / "a_temp.idx"), temp_a)
    assert np.array_equal(read_idx(out / "a_pres.idx"), pres_a)
    assert np.array_equal(read_idx(out / "b_temp.idx"), temp_b)
    out, _, _ = convert(tmp_path, "NETCDF", fmt="zarr", variables=["temp"])
    group = zarr.open_group(str(out / "data.zarr"), mode="r")
    assert np.array_equal(group["b_temp"]["0"][:], temp_b)


def test_zarr_outputs_are_named_as_their_groups(tmp_path: Path, inp: Path) -> None:
    """Two HDF5 files whose names make the same file-safe name (``a b.h5`` and
    ``a_b.h5``) get two Zarr groups, and each output is named after the group
    that holds it, as IDX names its field."""
    first = RNG.integers(0, 9, (2, 3), dtype=np.uint8)
    second = RNG.integers(0, 9, (4, 5), dtype=np.uint8)
    with h5py.File(inp / "a b.h5", "w") as f:
        f["x"] = first
    with h5py.File(inp / "a_b.h5", "w") as f:
        f["x"] = second
    out, result, _ = convert(tmp_path, "HDF5", fmt="zarr", levels=1)
    group = zarr.open_group(str(out / "data.zarr"), mode="r")
    by_name = {o["name"]: o for o in result.outputs}
    assert sorted(by_name) == ["a_b", "a_b_2"]
    for name, output in by_name.items():
        assert output["path"] == f"data.zarr/{name}/0"
        expected = first if output["source"].startswith("a b.h5") else second
        assert np.array_equal(group[name]["0"][:], expected)


def test_netcdf_variables_param_and_zarr(tmp_path: Path, inp: Path) -> None:
    """params['variables'] chooses; Zarr output has a group per variable with its
    dimension names as axes; an unknown variable is refused naming the file."""
    temp, _ = write_netcdf(inp / "climate.nc")
    out, result, _ = convert(tmp_path, "NETCDF", fmt="zarr", variables=["temp"])
    assert {o["name"] for o in result.outputs} == {"temp"}
    group = zarr.open_group(str(out / "data.zarr"), mode="r")
    assert np.array_equal(group["temp/0"][:], temp)
    axes = group["temp"].attrs["ome"]["multiscales"][0]["axes"]
    assert [a["name"] for a in axes] == ["time", "lat", "lon"]
    assert group.attrs["sclib"] == {"groups": ["temp"]}
    with pytest.raises(ConversionError, match=r"climate\.nc has no variable 'wind'"):
        convert(tmp_path, "NETCDF", variables=["wind"])
    with pytest.raises(InvalidInput, match="variables"):
        convert(tmp_path, "NETCDF", variables=[1, 2])


# -- IDX passthrough -------------------------------------------------------------


def test_idx_passthrough_links_and_opens_as_visus_idx(
    tmp_path: Path, inp: Path
) -> None:
    """An existing scan.idx (in a subfolder, data in scan/) is published as
    visus.idx that opens to the same values, its block files hard-linked."""
    vol = RNG.integers(0, 255, (4, 6, 8), dtype=np.uint8)
    (inp / "sub").mkdir()
    db = ov.CreateIdx(
        url=str(inp / "sub" / "scan.idx"),
        dims=[8, 6, 4],
        fields=[ov.Field("density", "uint8")],
    )
    db.write(vol)
    out, result, _ = convert(tmp_path, "IDX")
    assert result.entry_point == "visus.idx"
    assert result.outputs == [
        {"name": "density", "path": "visus.idx", "shape": [4, 6, 8], "dtype": "uint8"}
    ]
    assert np.array_equal(read_idx(out / "visus.idx"), vol)
    src = next((inp / "sub" / "scan").iterdir())
    dst = out / "scan" / src.name
    assert dst.stat().st_ino == src.stat().st_ino
    assert "sub/scan.idx" in result.inputs and f"sub/scan/{src.name}" in result.inputs
    with pytest.raises(ConversionError, match="IDX only"):
        convert(tmp_path, "IDX", fmt="zarr")


def test_idx_template_outside_the_folder_is_refused(tmp_path: Path, inp: Path) -> None:
    """An .idx whose data files live elsewhere (absolute template) is refused."""
    ov.CreateIdx(
        url=str(inp / "evil.idx"),
        dims=[4, 4],
        fields=[ov.Field("data", "uint8")],
        filename_template="/etc/%04x.bin",
    )
    with pytest.raises(ConversionError, match=r"evil\.idx: its data files"):
        convert(tmp_path, "IDX")


# -- wrong input ----------------------------------------------------------------------


def _text(path: Path) -> None:
    path.write_text("this is not an image\n" * 20)


@pytest.mark.parametrize(
    ("sensor", "name"),
    [
        ("TIFF", "scan.tif"),
        ("TIFF RGB", "scan.tiff"),
        ("RGB", "photo.png"),
        ("HDF5", "data.h5"),
        ("NETCDF", "data.nc"),
        ("IDX", "visus.idx"),
    ],
)
def test_wrong_format_names_the_file(
    tmp_path: Path, inp: Path, sensor: str, name: str
) -> None:
    """A text file with the sensor's file extension is a ConversionError whose
    message names the file, and nothing is written."""
    (inp / "ok").mkdir()
    _text(inp / "ok" / name)
    with pytest.raises(ConversionError, match=re.escape(f"ok/{name}")):
        convert(tmp_path, sensor)
    assert not any(p.is_file() for p in tmp_path.glob("out-*/**/*"))


def test_corrupt_hdf5_names_the_file(tmp_path: Path, inp: Path) -> None:
    """An HDF5 file cut in half is refused naming it."""
    write_nexus(inp / "full.h5", np.zeros((50, 50), dtype=np.float64))
    raw = (inp / "full.h5").read_bytes()
    (inp / "full.h5").unlink()
    (inp / "half.h5").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ConversionError, match=r"half\.h5"):
        convert(tmp_path, "HDF5")


def test_slices_that_differ_are_refused(tmp_path: Path, inp: Path) -> None:
    """A stack whose slices differ in shape or type names both files; no output."""
    tifffile.imwrite(inp / "s1.tif", np.zeros((4, 4), dtype=np.uint16))
    tifffile.imwrite(inp / "s2.tif", np.zeros((4, 5), dtype=np.uint16))
    with pytest.raises(ConversionError, match=r"s2\.tif is 4x5 uint16 but s1\.tif"):
        convert(tmp_path, "TIFF")
    tifffile.imwrite(inp / "s2.tif", np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ConversionError, match=r"s2\.tif is 4x4 float32"):
        convert(tmp_path, "TIFF")
    assert not any(p.is_file() for p in tmp_path.glob("out-*/**/*"))


def test_colour_tiff_for_the_grey_sensor_says_so(tmp_path: Path, inp: Path) -> None:
    """An RGB page under sensor TIFF points at the TIFF RGB sensor."""
    tifffile.imwrite(inp / "c.tif", np.zeros((4, 4, 3), np.uint8), photometric="rgb")
    with pytest.raises(ConversionError, match=r"c\.tif .*use the 'TIFF RGB' sensor"):
        convert(tmp_path, "TIFF")


def test_no_understood_files_lists_what_was_found(tmp_path: Path, inp: Path) -> None:
    """No file with the sensor's extensions: the error lists the dataset's files."""
    _text(inp / "notes.txt")
    _text(inp / "table.csv")
    with pytest.raises(ConversionError) as e:
        convert(tmp_path, "TIFF")
    assert "no TIFF files" in str(e.value)
    assert "notes.txt" in str(e.value) and "table.csv" in str(e.value)


def test_input_paths_cannot_leave_the_dataset(tmp_path: Path, inp: Path) -> None:
    """A file list entry with '..' is refused before anything is opened."""
    tifffile.imwrite(tmp_path / "outside.tif", np.zeros((2, 2), dtype=np.uint8))
    with pytest.raises(InvalidInput, match="not allowed"):
        convert(tmp_path, "TIFF", ["../outside.tif"])


def test_bad_params_are_refused(tmp_path: Path, inp: Path) -> None:
    """Parameters of the wrong type name themselves."""
    tifffile.imwrite(inp / "a.tif", np.zeros((2, 2), dtype=np.uint8))
    with pytest.raises(InvalidInput, match="'slab_mib'"):
        convert(tmp_path, "TIFF", slab_mib="big")
    with pytest.raises(InvalidInput, match="'compression'"):
        convert(tmp_path, "TIFF", compression="bz2")
    with pytest.raises(InvalidInput, match="output_format"):
        ConversionRequest(tmp_path, [], tmp_path, "TIFF", output_format="n5")
