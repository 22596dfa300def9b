"""The converter registry (built-ins, entry points, runtime register), cancellation,
and importing sclib.pipeline.convert without the optional packages."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from sclib.errors import ConfigurationError, ConversionError, InvalidInput, SclibError
from sclib.pipeline import convert as conv
from sclib.pipeline.convert import (
    ConversionRequest,
    ConversionResult,
    available_converters,
    converter_for,
    register,
    unregister,
)


class Spectro:
    """A converter for a sensor sclib does not know, writing a small text file."""

    name = "spectro"
    sensors = ("SPECTRO",)

    def convert(self, request: ConversionRequest) -> ConversionResult:
        (request.output_dir / "out.txt").write_text(",".join(request.files))
        return ConversionResult("out.txt", [], list(request.files))


@pytest.fixture
def clean_registry() -> Iterator[None]:
    conv.reset_cache()
    yield
    for sensor in ("SPECTRO", "TIFF", "XRF"):
        unregister(sensor)
    conv.reset_cache()


def test_builtins_and_sensors_without_converter() -> None:
    """Every built-in sensor has a converter; OTHER, MAPIR and unknown sensors have
    none (None, not an error); names ignore case and spaces around them."""
    table = available_converters()
    assert table == {
        "4D_NEXUS": "hdf5",
        "HDF5": "hdf5",
        "IDX": "idx",
        "NETCDF": "netcdf",
        "RGB": "rgb-image",
        "TIFF": "tiff",
        "TIFF RGB": "tiff-rgb",
    }
    for sensor in ("OTHER", "MAPIR", "no such sensor"):
        assert converter_for(sensor) is None
    tiff = converter_for(" tiff ")
    assert tiff is not None and tiff.name == "tiff"
    assert isinstance(tiff, conv.Converter)
    assert converter_for("HDF5") is converter_for("4d_nexus")


def test_runtime_register_refuses_duplicates(
    clean_registry: None, tmp_path: Path
) -> None:
    """register() adds a sensor; a second converter for it (or for a built-in
    sensor) is refused naming the one in place, unless replace=True."""
    register(Spectro)  # a class is instantiated
    found = converter_for("spectro")
    assert isinstance(found, Spectro)
    assert available_converters()["SPECTRO"] == "spectro"

    class Other(Spectro):
        name = "other-spectro"

    with pytest.raises(ConfigurationError, match=r"'SPECTRO' already has the conv"):
        register(Other())
    assert converter_for("SPECTRO") is found  # unchanged
    with pytest.raises(ConfigurationError, match=r"'TIFF' already has .* 'tiff'"):
        register(type("T", (Spectro,), {"sensors": ("XRF", "TIFF")})())
    assert converter_for("XRF") is None  # nothing of the refused call stayed
    register(Other(), replace=True)
    assert converter_for("SPECTRO").name == "other-spectro"  # type: ignore[union-attr]
    out = tmp_path / "out"
    out.mkdir()
    result = converter_for("SPECTRO").convert(  # type: ignore[union-attr]
        ConversionRequest(tmp_path, ["a.dat"], out, "SPECTRO")
    )
    assert result.entry_point == "out.txt" and (out / "out.txt").read_text() == "a.dat"


def test_register_refuses_what_is_not_a_converter(clean_registry: None) -> None:
    """An object without name/sensors/convert is refused with what it needs."""
    with pytest.raises(ConfigurationError, match="non-empty 'sensors'"):
        register(object())
    bad = type("Bad", (), {"name": "bad", "sensors": (), "convert": lambda s, r: r})
    with pytest.raises(ConfigurationError, match="is not a converter"):
        register(bad)


def _fake_distribution(root: Path, entries: str) -> None:
    """A plugin package on sys.path: a module and a dist-info with entry points."""
    (root / "fake_spectro_plugin.py").write_text(
        textwrap.dedent(
            """
            from sclib.pipeline.convert import ConversionResult

            class SpectroConverter:
                name = "spectro-plugin"
                sensors = ("SPECTRO", "Raman")

                def convert(self, request):
                    return ConversionResult("x", [], [])
            """
        )
    )
    info = root / "fake_spectro_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fake-spectro-plugin\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(f"[sclib.converters]\n{entries}\n")


def test_entry_point_plugin_is_found(
    clean_registry: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A converter class declared in the sclib.converters entry-point group of an
    installed distribution serves its sensors and is listed."""
    _fake_distribution(tmp_path, "spectro = fake_spectro_plugin:SpectroConverter")
    monkeypatch.syspath_prepend(str(tmp_path))
    conv.reset_cache()
    found = converter_for("raman")
    assert found is not None and found.name == "spectro-plugin"
    assert converter_for("SPECTRO") is found
    table = available_converters()
    assert table["RAMAN"] == "spectro-plugin" and table["TIFF"] == "tiff"
    with pytest.raises(ConfigurationError, match="already has the converter"):
        register(Spectro())


def test_broken_entry_point_is_explained(
    clean_registry: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry point whose module is missing names itself and its group."""
    _fake_distribution(tmp_path, "broken = no_such_module_xyz:Converter")
    monkeypatch.syspath_prepend(str(tmp_path))
    conv.reset_cache()
    with pytest.raises(
        ConfigurationError, match=r"entry point 'broken' .*'sclib.converters'"
    ):
        converter_for("TIFF")


def test_conversion_error_is_not_retryable() -> None:
    """ConversionError is an InvalidInput (a ValueError) that a retry cannot fix."""
    assert issubclass(ConversionError, InvalidInput)
    assert issubclass(ConversionError, ValueError)
    assert not ConversionError("x").retryable


def test_cancellation_stops_between_slices(tmp_path: Path) -> None:
    """When check() raises, the converter stops at once: no page is read after it,
    and nothing is written beyond the slabs already done."""
    np = pytest.importorskip("numpy")
    tifffile = pytest.importorskip("tifffile")
    pytest.importorskip("OpenVisus")
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(40):
        tifffile.imwrite(inp / f"s{i}.tif", np.full((64, 64), i, dtype=np.uint16))
    out = tmp_path / "out"
    out.mkdir()

    class Stop(SclibError):
        pass

    calls = 0
    progress: list[int] = []

    def check() -> None:
        nonlocal calls
        calls += 1
        if calls == 45:  # 40 during the scan, then 5 more: inside the first slab
            raise Stop("cancelled")

    converter = converter_for("TIFF")
    assert converter is not None
    with pytest.raises(Stop):
        converter.convert(
            ConversionRequest(
                inp,
                sorted(p.name for p in inp.iterdir()),
                out,
                "TIFF",
                {"slab_mib": 1},
                check=check,
                progress=lambda d, t, m: progress.append(d),
            )
        )
    assert calls == 45  # not called again after raising
    assert progress == []  # the first slab never finished


def test_import_needs_no_optional_package(tmp_path: Path) -> None:
    """With numpy, OpenVisus, tifffile, h5py, netCDF4, zarr and PIL made
    unimportable, sclib and sclib.pipeline.convert import, list converters, and
    converting raises MissingDependency naming the convert extra."""
    code = textwrap.dedent(
        f"""
        import sys
        BLOCKED = {{"numpy", "OpenVisus", "tifffile", "h5py", "netCDF4", "zarr", "PIL"}}

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, Block())
        import sclib
        import sclib.pipeline.convert as conv
        from sclib.errors import MissingDependency
        loaded = sorted(m for m in BLOCKED if m in sys.modules)
        assert not loaded, loaded
        assert conv.available_converters()["TIFF"] == "tiff"
        converter = conv.converter_for("TIFF")
        request = conv.ConversionRequest(
            {str(tmp_path)!r}, ["a.tif"], {str(tmp_path)!r}, "TIFF"
        )
        try:
            converter.convert(request)
        except MissingDependency as exc:
            print(exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "pip install 'sclib[convert]'" in out.stdout
    assert "tifffile" in out.stdout
