"""Calorimeter geometry: layers, each split into angular (alpha) x radial (r) voxels.

The voxel order is the CaloChallenge one: flattened as (layer, angular bin, radial bin), i.e. the
radial index runs fastest. The geometry is written next to every shower file as a CaloChallenge
binning XML (``<Bins><Bin name=... pid=...><Layer id= r_edges= n_bin_alpha=/>``), which the
CaloChallenge's own ``XMLHandler`` reads; the reference simulation adds the layer's depth in
radiation lengths (attributes ``x0_start`` and ``x0_end``, ignored by other readers).
Layers of a binning XML whose ``r_edges`` hold fewer than two edges are empty (the
CaloChallenge's dataset 1 lists 24 calorimeter layers of which 5 have voxels) and are skipped.
Radial edges are in mm; angular bins split [-pi, pi) evenly (``alpha_offset`` rotates them).
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError, InputFileError

PARTICLE_PID = {"photon": 22, "electron": 11, "positron": -11, "pion": 211}


@dataclass(frozen=True)
class Layer:
    """One layer: radial bin edges [mm], number of angular bins, depth [X0] (None if unknown)."""

    id: int
    r_edges: tuple[float, ...]
    n_alpha: int
    x0_start: float | None = None
    x0_end: float | None = None
    alpha_offset: float = 0.0

    @property
    def n_r(self) -> int:
        return len(self.r_edges) - 1

    @property
    def n_voxels(self) -> int:
        return self.n_r * self.n_alpha


@dataclass(frozen=True)
class Geometry:
    """An ordered list of non-empty layers; helpers for voxel indices and voxel centres."""

    layers: tuple[Layer, ...]
    particle: str = "photon"
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def n_voxels(self) -> int:
        return sum(layer.n_voxels for layer in self.layers)

    @property
    def layer_offsets(self) -> np.ndarray:
        """Index of the first voxel of each layer, and the total at the end (n_layers + 1)."""
        return np.concatenate([[0], np.cumsum([layer.n_voxels for layer in self.layers])]).astype(np.int64)

    @property
    def voxel_layer(self) -> np.ndarray:
        """Layer index (0 .. n_layers-1) of every voxel."""
        return np.repeat(np.arange(self.n_layers), [layer.n_voxels for layer in self.layers])

    def voxel_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) [mm] of every voxel's centre: radial bin centre, angular bin centre.

        The innermost radial bin of a one-angular-bin layer sits at r = 0 (its centre of energy is
        the axis), as do the bins of a layer with one angular bin (x = y = 0 by symmetry)."""
        xs, ys = [], []
        for layer in self.layers:
            edges = np.asarray(layer.r_edges)
            r_mid = 0.5 * (edges[1:] + edges[:-1])
            a_mid = -math.pi + layer.alpha_offset + (np.arange(layer.n_alpha) + 0.5) * 2 * math.pi / layer.n_alpha
            if layer.n_alpha == 1:
                r_mid = np.zeros_like(r_mid)
            rr, aa = np.meshgrid(r_mid, a_mid)  # (n_alpha, n_r): radial runs fastest
            xs.append((rr * np.cos(aa)).ravel())
            ys.append((rr * np.sin(aa)).ravel())
        return np.concatenate(xs), np.concatenate(ys)

    def symmetry_permutations(self) -> np.ndarray:
        """Voxel permutations (K, n_voxels) of the azimuthal symmetries of the binning: rotations by
        multiples of the common angular bin and the reflection alpha -> -alpha, applied to every
        angular layer at once (``showers[:, perm]`` is the rotated or reflected shower). A shower
        of a particle entering along the axis is as likely as any of its images; the first row is
        the identity. Only the identity where the angular layers differ in bin count or offset."""
        ident = np.arange(self.n_voxels)
        ang = [la for la in self.layers if la.n_alpha > 1]
        if not ang or len({(la.n_alpha, la.alpha_offset) for la in ang}) > 1:
            return ident[None, :]
        n = ang[0].n_alpha
        perms = []
        for reflect in (False, True):
            for k in range(n):
                perm, start = [], 0
                for la in self.layers:
                    idx = np.arange(la.n_voxels).reshape(la.n_alpha, la.n_r) + start
                    if la.n_alpha > 1:
                        order = np.arange(n)[::-1] if reflect else np.arange(n)
                        idx = idx[np.roll(order, k)]
                    perm.append(idx.ravel())
                    start += la.n_voxels
                perms.append(np.concatenate(perm))
        return np.stack(perms)

    def has_depth(self) -> bool:
        return all(layer.x0_start is not None and layer.x0_end is not None for layer in self.layers)

    def same_binning(self, other: Geometry) -> bool:
        return [(la.r_edges, la.n_alpha) for la in self.layers] == [(lb.r_edges, lb.n_alpha) for lb in other.layers]

    # ----------------------------------------------------------------------------------------
    # CaloChallenge binning XML
    # ----------------------------------------------------------------------------------------
    def to_xml(self, path: str | os.PathLike) -> None:
        """Write the CaloChallenge binning XML (atomically)."""
        from pipeline.io import atomic_output

        root = ET.Element("Bins")
        b = ET.SubElement(root, "Bin", pid=str(PARTICLE_PID.get(self.particle, 0)), name=self.particle,
                          etaMin="0", etaMax="130")
        for layer in self.layers:
            attrs = {"id": str(layer.id), "r_edges": ",".join(_fmt(e) for e in layer.r_edges),
                     "n_bin_alpha": str(layer.n_alpha)}
            if layer.alpha_offset:
                attrs["alpha_offset"] = _fmt(layer.alpha_offset)
            if layer.x0_start is not None:
                attrs["x0_start"] = _fmt(layer.x0_start)
                attrs["x0_end"] = _fmt(layer.x0_end)
            ET.SubElement(b, "Layer", attrs)
        ET.indent(root)
        with atomic_output(path) as tmp:
            Path(tmp).write_text(ET.tostring(root, encoding="unicode") + "\n")

    @classmethod
    def from_xml(cls, path: str | os.PathLike, particle: str | None = None) -> Geometry:
        """Read a CaloChallenge binning XML; with ``particle``, the ``<Bin name=...>`` of it."""
        path = Path(path)
        if not path.exists():
            raise InputFileError(f"{path}: binning file does not exist")
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as exc:
            raise InputFileError(f"{path}: not a readable binning XML ({exc})") from None
        bins = root.findall("Bin") or root.findall("Particle")
        if not bins:
            raise InputFileError(f"{path}: no <Bin> element (expected a CaloChallenge binning XML)")
        chosen = bins[0]
        if particle is not None:
            named = [b for b in bins if b.get("name") == particle]
            if named:
                chosen = named[0]
            elif len(bins) > 1:
                raise InputFileError(f"{path}: no <Bin name='{particle}'> (found: "
                                     f"{', '.join(str(b.get('name')) for b in bins)})")
        layers = []
        for el in chosen.findall("Layer"):
            try:
                edges = tuple(float(x) for x in el.get("r_edges", "").split(",") if x.strip())
                n_alpha = int(el.get("n_bin_alpha", "1"))
                lid = int(el.get("id", len(layers)))
            except ValueError as exc:
                raise InputFileError(f"{path}: layer {el.get('id')}: unreadable attribute ({exc})") from None
            if len(edges) < 2 or n_alpha < 1:
                continue
            if any(b <= a for a, b in zip(edges, edges[1:])):
                raise InputFileError(f"{path}: layer {lid}: r_edges must increase strictly")
            x0s, x0e = el.get("x0_start"), el.get("x0_end")
            layers.append(Layer(lid, edges, n_alpha, float(x0s) if x0s else None, float(x0e) if x0e else None,
                                float(el.get("alpha_offset", "0") or 0.0)))
        if not layers:
            raise InputFileError(f"{path}: no layer with voxels")
        return cls(tuple(layers), particle=particle or chosen.get("name") or "photon")

    @classmethod
    def from_config(cls, geo_cfg: Mapping, particle: str = "photon", key: str = "calo.geometries") -> Geometry:
        """A geometry from a config block ``{layers: [{x0, r_edges_mm, n_alpha}, ...]}``.

        Layers follow each other in depth: layer i spans [sum of x0 before it, + its x0]."""
        layers = []
        depth = 0.0
        for i, lc in enumerate(geo_cfg["layers"]):
            edges = tuple(float(e) for e in lc["r_edges_mm"])
            if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
                raise ConfigError(f"{key}.layers[{i}].r_edges_mm: need at least two strictly increasing edges")
            layers.append(Layer(int(lc.get("id", i)), edges, int(lc["n_alpha"]), depth, depth + float(lc["x0"])))
            depth += float(lc["x0"])
        return cls(tuple(layers), particle=particle)

    def describe(self) -> str:
        return (f"{self.n_layers} layers, {self.n_voxels} voxels ("
                + ", ".join(f"{la.n_alpha}x{la.n_r}" for la in self.layers) + ")")


def _fmt(x: float) -> str:
    return f"{x:g}"


def check_consistent(geometries: Mapping[str, Geometry]) -> Geometry:
    """All samples trained by one GAN must share one binning; return it or raise naming them."""
    items = list(geometries.items())
    first_name, first = items[0]
    for name, g in items[1:]:
        if not first.same_binning(g):
            raise ConfigError(f"calo.samples: '{name}' ({g.describe()}) and '{first_name}' ({first.describe()}) "
                              "have different binnings; one GAN needs one binning")
    return first


def particles_index(names: Sequence[str]) -> dict[str, int]:
    return {p: i for i, p in enumerate(sorted(set(names)))}
