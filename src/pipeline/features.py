"""Event-level physics quantities of the VBF H -> mu mu analysis: the one place they are defined.

The skim (:mod:`pipeline.skim`) writes them, the Coffea analysis processor and the classifiers
read or recompute them, and plots label their axes from :data:`EVENT_COLUMNS`. Every function
here is pure: awkward arrays of records with ``pt``, ``eta``, ``phi``, ``mass`` (and the other
NanoAOD fields named below) in, numpy arrays or awkward masks out. Records may be plain
``ak.zip`` records (:func:`pipeline.io.collection`) or coffea ``NanoEvents`` collections; fields
are read by name (``obj["pt"]``), so no coffea or ``vector`` behaviour is needed.

Object selection (``skim:`` block of the config)::

    muon:  pt > muons.pt_min_gev, |eta| < muons.abs_eta_max, pfRelIso04_all < muons.rel_iso_max,
           muons.id (mediumId or tightId) true
    jet:   pt > jets.pt_min_gev, |eta| < jets.abs_eta_max, jetId >= jets.jet_id_min,
           dR(jet, every selected muon) > jets.min_dr_muon
    b jet: selected jet with |eta| < BTAG_ABS_ETA_MAX and btagDeepFlavB > jets.btag_wp

Selected objects are ordered by decreasing pT; "leading"/"subleading" refer to that order and the
dimuon system is built from the two leading selected muons. Float columns that need an object an
event does not have (a second jet, a second muon) are NaN; counts are integers; charges of absent
muons are 0.

Trap: ``delta_eta_jj`` and ``delta_phi_jj`` are absolute values (``delta_phi_jj`` in [0, pi]), and
the Zeppenfeld variable uses *rapidities*, not pseudorapidities, of all three objects.
"""

from __future__ import annotations

from collections.abc import Mapping

import awkward as ak
import numpy as np

from pipeline import nanoaod
from pipeline.errors import ConfigError

# Tracker acceptance of b tagging: jets outside it are never counted as b jets.
BTAG_ABS_ETA_MAX = 2.5

MUON_IDS = ("mediumId", "tightId")

# Collection fields (of the nanoaod contract) that the features need, besides the muon ID.
MUON_FIELDS = ("pt", "eta", "phi", "mass", "charge", "pfRelIso04_all")
JET_FIELDS = ("pt", "eta", "phi", "mass", "jetId", "btagDeepFlavB", "qgl")

#: Every column :func:`event_features` returns: name -> (unit, description). Unit "" = dimensionless.
EVENT_COLUMNS: dict[str, tuple[str, str]] = {
    "n_muons": ("", "number of selected muons"),
    "mu1_pt": ("GeV", "pT of the leading selected muon"),
    "mu1_eta": ("", "pseudorapidity of the leading selected muon"),
    "mu1_phi": ("rad", "azimuth of the leading selected muon"),
    "mu1_charge": ("e", "charge of the leading selected muon (0: no such muon)"),
    "mu2_pt": ("GeV", "pT of the subleading selected muon"),
    "mu2_eta": ("", "pseudorapidity of the subleading selected muon"),
    "mu2_phi": ("rad", "azimuth of the subleading selected muon"),
    "mu2_charge": ("e", "charge of the subleading selected muon (0: no such muon)"),
    "m_mumu": ("GeV", "invariant mass of the two leading selected muons"),
    "pt_mumu": ("GeV", "pT of the dimuon system"),
    "eta_mumu": ("", "pseudorapidity of the dimuon system"),
    "y_mumu": ("", "rapidity of the dimuon system"),
    "phi_mumu": ("rad", "azimuth of the dimuon system"),
    "n_jets": ("", "number of selected jets"),
    "n_bjets": ("", "number of selected jets passing the b-tag working point (skim.jets.btag_wp)"),
    "j1_pt": ("GeV", "pT of the leading selected jet"),
    "j1_eta": ("", "pseudorapidity of the leading selected jet"),
    "j1_phi": ("rad", "azimuth of the leading selected jet"),
    "j1_qgl": ("", "quark-gluon likelihood of the leading selected jet"),
    "j2_pt": ("GeV", "pT of the subleading selected jet"),
    "j2_eta": ("", "pseudorapidity of the subleading selected jet"),
    "j2_phi": ("rad", "azimuth of the subleading selected jet"),
    "j2_qgl": ("", "quark-gluon likelihood of the subleading selected jet"),
    "m_jj": ("GeV", "invariant mass of the two leading selected jets"),
    "delta_eta_jj": ("", "|eta(j1) - eta(j2)|"),
    "delta_phi_jj": ("rad", "|phi(j1) - phi(j2)| wrapped into [0, pi]"),
    "zeppenfeld": ("", "z* = (y_mumu - (y_j1 + y_j2)/2) / |y_j1 - y_j2| (rapidities)"),
    "r_pt": ("", "R(pT) = |pT(mumu + j1 + j2)| / (pT_mumu + pT_j1 + pT_j2)"),
    "ht": ("GeV", "scalar sum of the pT of all selected jets"),
    "met_pt": ("GeV", "missing transverse momentum (MET_pt)"),
    "met_phi": ("rad", "azimuth of the missing transverse momentum (MET_phi)"),
}

INT_COLUMNS = ("n_muons", "mu1_charge", "mu2_charge", "n_jets", "n_bjets")


def event_columns() -> list[str]:
    """Names of the columns :func:`event_features` returns, in order."""
    return list(EVENT_COLUMNS)


def axis_label(name: str) -> str:
    """A plot axis label such as ``"m_mumu [GeV]"`` (no unit suffix for dimensionless columns)."""
    unit = EVENT_COLUMNS[name][0] if name in EVENT_COLUMNS else ""
    return f"{name} [{unit}]" if unit else name


# --------------------------------------------------------------------------------------------
# config access
# --------------------------------------------------------------------------------------------
def _cfg(block: Mapping, key: str, path: str):
    try:
        return block[key]
    except (KeyError, TypeError):
        raise ConfigError(f"config key '{path}.{key}' is missing") from None


def muon_id_field(skim_cfg: Mapping) -> str:
    """The boolean Muon field of ``skim.muons.id`` (checked against the contract)."""
    name = _cfg(_cfg(skim_cfg, "muons", "skim"), "id", "skim.muons")
    if name not in MUON_IDS or name not in nanoaod.MUON:
        raise ConfigError(f"skim.muons.id is {name!r}; expected one of {', '.join(MUON_IDS)}")
    return name


def muon_fields(skim_cfg: Mapping) -> list[str]:
    """Muon fields read by :func:`select_objects` and :func:`event_features`."""
    return [*MUON_FIELDS, muon_id_field(skim_cfg)]


def jet_fields(skim_cfg: Mapping | None = None) -> list[str]:
    """Jet fields read by :func:`select_objects` and :func:`event_features`."""
    return list(JET_FIELDS)


def btag_wp(skim_cfg: Mapping) -> float:
    return float(_cfg(_cfg(skim_cfg, "jets", "skim"), "btag_wp", "skim.jets"))


# --------------------------------------------------------------------------------------------
# kinematics (numpy ufuncs: work on numpy and awkward arrays alike)
# --------------------------------------------------------------------------------------------
def delta_phi(phi1, phi2):
    """phi1 - phi2 wrapped into [-pi, pi)."""
    return (phi1 - phi2 + np.pi) % (2 * np.pi) - np.pi


def delta_r(eta1, phi1, eta2, phi2):
    return np.sqrt((eta1 - eta2) ** 2 + delta_phi(phi1, phi2) ** 2)


def p4_cartesian(pt, eta, phi, mass):
    """(px, py, pz, E) of (pt, eta, phi, mass)."""
    px = pt * np.cos(phi)
    py = pt * np.sin(phi)
    pz = pt * np.sinh(eta)
    e = np.sqrt(px**2 + py**2 + pz**2 + mass**2)
    return px, py, pz, e


def rapidity(pt, eta, mass):
    """Rapidity y = 1/2 ln((E + pz) / (E - pz))."""
    pz = pt * np.sinh(eta)
    e = np.sqrt((pt * np.cosh(eta)) ** 2 + mass**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 0.5 * np.log((e + pz) / (e - pz))


def _system(px, py, pz, e) -> dict[str, np.ndarray]:
    """pt, eta, y, phi, mass of a system given its summed Cartesian momentum (numpy float64)."""
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(pz / pt)
        y = 0.5 * np.log((e + pz) / (e - pz))
    phi = np.arctan2(py, px)
    mass = np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0.0))
    return {"pt": pt, "eta": eta, "y": y, "phi": phi, "mass": mass}


# --------------------------------------------------------------------------------------------
# object selection
# --------------------------------------------------------------------------------------------
def muon_mask(muons: ak.Array, skim_cfg: Mapping) -> ak.Array:
    """Jagged boolean mask of the muons passing ``skim.muons``."""
    mcfg = _cfg(skim_cfg, "muons", "skim")
    id_name = muon_id_field(skim_cfg)
    return (
        (muons["pt"] > _cfg(mcfg, "pt_min_gev", "skim.muons"))
        & (abs(muons["eta"]) < _cfg(mcfg, "abs_eta_max", "skim.muons"))
        & (muons["pfRelIso04_all"] < _cfg(mcfg, "rel_iso_max", "skim.muons"))
        & (muons[id_name] != 0)
    )


def min_delta_r(objects: ak.Array, others: ak.Array, empty: float = np.inf) -> ak.Array:
    """For every object, dR to the nearest of ``others`` in the same event (``empty`` if none)."""
    a = ak.zip({"eta": objects["eta"], "phi": objects["phi"]})
    b = ak.zip({"eta": others["eta"], "phi": others["phi"]})
    pairs = ak.cartesian({"a": a, "b": b}, axis=1, nested=True)
    dr = delta_r(pairs["a"]["eta"], pairs["a"]["phi"], pairs["b"]["eta"], pairs["b"]["phi"])
    return ak.fill_none(ak.min(dr, axis=-1), empty)


def jet_mask(jets: ak.Array, selected_muons: ak.Array, skim_cfg: Mapping) -> ak.Array:
    """Jagged boolean mask of the jets passing ``skim.jets`` (cleaned against ``selected_muons``)."""
    jcfg = _cfg(skim_cfg, "jets", "skim")
    return (
        (jets["pt"] > _cfg(jcfg, "pt_min_gev", "skim.jets"))
        & (abs(jets["eta"]) < _cfg(jcfg, "abs_eta_max", "skim.jets"))
        & (jets["jetId"] >= _cfg(jcfg, "jet_id_min", "skim.jets"))
        & (min_delta_r(jets, selected_muons) > _cfg(jcfg, "min_dr_muon", "skim.jets"))
    )


def _pt_sorted(objects: ak.Array) -> ak.Array:
    return objects[ak.argsort(objects["pt"], axis=1, ascending=False)]


def select_objects(muons: ak.Array, jets: ak.Array, skim_cfg: Mapping) -> tuple[ak.Array, ak.Array]:
    """The selected muons and jets of every event, each ordered by decreasing pT."""
    sel_mu = _pt_sorted(muons[muon_mask(muons, skim_cfg)])
    sel_jet = _pt_sorted(jets[jet_mask(jets, sel_mu, skim_cfg)])
    return sel_mu, sel_jet


# --------------------------------------------------------------------------------------------
# event features
# --------------------------------------------------------------------------------------------
def _nth(objects: ak.Array, n: int, field: str, fill=np.nan, dtype=np.float64) -> np.ndarray:
    """Field of the n-th object of every event as numpy (``fill`` where the event has fewer)."""
    padded = ak.pad_none(objects[field], n + 1, axis=1)[:, n]
    return ak.to_numpy(ak.fill_none(padded, fill)).astype(dtype)


def _flat(values, dtype=np.float64) -> np.ndarray:
    return ak.to_numpy(values).astype(dtype)


def event_features(
    sel_muons: ak.Array, sel_jets: ak.Array, met_pt, met_phi, skim_cfg: Mapping
) -> dict[str, np.ndarray]:
    """The :data:`EVENT_COLUMNS` of every event, from already selected, pT-ordered objects.

    ``sel_muons`` / ``sel_jets`` come from :func:`select_objects`; ``met_pt`` / ``met_phi`` are
    per-event arrays. Returns numpy arrays (float64, or int32 for :data:`INT_COLUMNS`).
    """
    wp = btag_wp(skim_cfg)
    out: dict[str, np.ndarray] = {}
    out["n_muons"] = _flat(ak.num(sel_muons, axis=1), np.int32)
    mu = {}
    for i in (0, 1):
        tag = f"mu{i + 1}"
        for f in ("pt", "eta", "phi"):
            out[f"{tag}_{f}"] = _nth(sel_muons, i, f)
        out[f"{tag}_charge"] = _nth(sel_muons, i, "charge", 0, np.int32)
        mu[i] = p4_cartesian(
            out[f"{tag}_pt"], out[f"{tag}_eta"], out[f"{tag}_phi"], _nth(sel_muons, i, "mass")
        )
    mumu_p4 = [a + b for a, b in zip(mu[0], mu[1])]
    mumu = _system(*mumu_p4)
    out["m_mumu"], out["pt_mumu"], out["eta_mumu"] = mumu["mass"], mumu["pt"], mumu["eta"]
    out["y_mumu"], out["phi_mumu"] = mumu["y"], mumu["phi"]

    out["n_jets"] = _flat(ak.num(sel_jets, axis=1), np.int32)
    is_b = (abs(sel_jets["eta"]) < BTAG_ABS_ETA_MAX) & (sel_jets["btagDeepFlavB"] > wp)
    out["n_bjets"] = _flat(ak.sum(is_b, axis=1), np.int32)
    j, y = {}, {}
    for i in (0, 1):
        tag = f"j{i + 1}"
        for f in ("pt", "eta", "phi", "qgl"):
            out[f"{tag}_{f}"] = _nth(sel_jets, i, f)
        mass = _nth(sel_jets, i, "mass")
        j[i] = p4_cartesian(out[f"{tag}_pt"], out[f"{tag}_eta"], out[f"{tag}_phi"], mass)
        y[i] = rapidity(out[f"{tag}_pt"], out[f"{tag}_eta"], mass)
    jj = _system(*[a + b for a, b in zip(j[0], j[1])])
    out["m_jj"] = jj["mass"]
    out["delta_eta_jj"] = np.abs(out["j1_eta"] - out["j2_eta"])
    out["delta_phi_jj"] = np.abs(delta_phi(out["j1_phi"], out["j2_phi"]))
    with np.errstate(divide="ignore", invalid="ignore"):
        out["zeppenfeld"] = (out["y_mumu"] - 0.5 * (y[0] + y[1])) / np.abs(y[0] - y[1])
        total = _system(*[a + b for a, b in zip(mumu_p4, [a + b for a, b in zip(j[0], j[1])])])
        out["r_pt"] = total["pt"] / (out["pt_mumu"] + out["j1_pt"] + out["j2_pt"])
    out["ht"] = _flat(ak.sum(sel_jets["pt"], axis=1))
    out["met_pt"] = np.asarray(met_pt, dtype=np.float64)
    out["met_phi"] = np.asarray(met_phi, dtype=np.float64)
    assert list(out) == list(EVENT_COLUMNS), "EVENT_COLUMNS out of sync with event_features"
    return out


def compute_event_features(
    muons: ak.Array, jets: ak.Array, met_pt, met_phi, skim_cfg: Mapping
) -> dict[str, np.ndarray]:
    """Select objects (:func:`select_objects`) and return their :func:`event_features`."""
    sel_mu, sel_jet = select_objects(muons, jets, skim_cfg)
    return event_features(sel_mu, sel_jet, met_pt, met_phi, skim_cfg)


# --------------------------------------------------------------------------------------------
# preselection
# --------------------------------------------------------------------------------------------
def preselection(columns: Mapping[str, np.ndarray], skim_cfg: Mapping) -> list[tuple[str, str, np.ndarray]]:
    """The ordered preselection as ``(name, description, cumulative mask)`` triples.

    Cuts: at least two selected muons; the two leading ones of opposite charge (only if
    ``skim.opposite_charge``); ``mmumu_min_gev < m_mumu < mmumu_max_gev``. Each mask includes all
    previous cuts, so the last one is the preselection.
    """
    mcfg = _cfg(skim_cfg, "muons", "skim")
    lo = _cfg(skim_cfg, "mmumu_min_gev", "skim")
    hi = _cfg(skim_cfg, "mmumu_max_gev", "skim")
    cuts = []
    mask = np.asarray(columns["n_muons"]) >= 2
    cuts.append(
        (
            "two_muons",
            f">= 2 muons with pT > {mcfg['pt_min_gev']} GeV, |eta| < {mcfg['abs_eta_max']}, "
            f"relIso < {mcfg['rel_iso_max']}, {muon_id_field(skim_cfg)}",
            mask,
        )
    )
    if _cfg(skim_cfg, "opposite_charge", "skim"):
        mask = mask & (np.asarray(columns["mu1_charge"]) * np.asarray(columns["mu2_charge"]) < 0)
        cuts.append(("opposite_charge", "two leading muons of opposite charge", mask))
    m = np.asarray(columns["m_mumu"])
    with np.errstate(invalid="ignore"):
        mask = mask & (m > lo) & (m < hi)
    cuts.append(("mmumu_window", f"{lo} < m_mumu < {hi} GeV", mask))
    return cuts
