"""The reference detector simulation: gen-level events -> NanoAOD ``Jet``, ``Muon`` and ``MET``.

It plays the experiment's full simulation in this pipeline, so that the FlashSim flows trained on
its output have a real job: a CMS-like (Run 3) parametrised detector, per object and per
particle, with every number in the ``detector`` block of the config
(``workflow/schemas/detector.schema.yaml`` and ``config/README.md`` document each key).

Model in one paragraph (see also :func:`simulate`)
---------------------------------------------------
Each event has ``n_PU ~ Poisson(<mu>)`` pileup interactions, an unobserved per-event latent that
correlates objects of the same event. **Jets**: each gen jet is reconstructed with an efficiency
turning on with pT (plateau falling in the forward region); its pT response is a double-sided
Crystal Ball whose core width is ``sqrt((N/pT)^2 + S^2/pT + C^2)`` with eta-dependent
noise/stochastic/constant terms (the noise term grows with ``n_PU``), whose median depends on
flavour (gluon < b < c < light quark) and on the neutral-hadron pT fraction of the gen jet, both
fading with pT, and whose low-side tail is heavier for b jets and heavier still for
semileptonic b/c decays (neutrinos in the cone); eta, phi and mass are smeared. ``nConstituents``
follows from the gen charged/neutral multiplicities (tracking efficiency inside the tracker,
cluster merging beyond, pileup candidates); ``qgl`` is a likelihood-like sigmoid of the smeared
ptD, ln(axis2) and the reco multiplicity; ``btagDeepFlavB`` the sigmoid of a flavour-dependent
Gaussian mixture (b-jets without a secondary vertex, light jets with a mistag tail) whose
separation degrades at low and high pT and at large |eta| (and is ``btag.default`` beyond the
tracker); ``jetId`` is the CMS bit mask (0/2/6) with the tightLepVeto computed from the jet's
muon/electron pT fraction. Pileup jets (genJetIdx = -1) come in Poisson numbers ~ n_PU with a
power-law pT spectrum, denser forward. **Muons**: each stable gen muon is reconstructed with an
efficiency turning on with momentum (with wheel cracks in eta); 1/pT is smeared with
multiple-scattering and curvature terms plus a catastrophic tail, so the charge flips when the
curvature changes sign; ``dxy``, ``dz``, ``ip3d`` come from the true decay vertex (flight of every
long-lived ancestor in the GenPart mother chain: B, D, tau, ...) plus a pT- and theta-dependent
resolution; ``pfRelIso04_all`` sums the actual particles within dR < 0.4 (tracking efficiency and
thresholds for charged ones, calorimeter resolution for neutral ones) plus pileup particles with
a delta-beta correction; medium/tight IDs depend on prompt/non-prompt/fake origin, pT and (tight)
the impact parameters. Charged pions and kaons fake muons (genPartIdx = -1) at a small rate.
**MET** is minus the vector sum of reco jets (with the reco muons inside them taken out), reco
muons and the unclustered particles (response below one, smeared with sumET and n_PU).

All steps are vectorised over the chunk with numpy (flat arrays + event index); the only random
source is the ``numpy.random.Generator`` passed in, so the same generator state gives the same
output bit for bit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import awkward as ak
import numpy as np
from scipy.special import expit, ndtr, ndtri

from pipeline import nanoaod
from pipeline.errors import ConfigError, MissingColumnError
from pipeline.samples.events import GeneratedEvents

log = logging.getLogger(__name__)

# Proper decay lengths c*tau [cm] of the weakly decaying ancestors of muons (PDG 2024). These are
# physical constants, not detector parameters, hence not in the config.
CTAU_CM: dict[int, float] = {
    15: 0.008703,  # tau
    411: 0.03118, 421: 0.01229, 431: 0.01510, 4122: 0.00606,  # D+, D0, Ds, Lambda_c
    4132: 0.00458, 4232: 0.0136, 4332: 0.00803,  # Xi_c0, Xi_c+, Omega_c
    511: 0.04557, 521: 0.04911, 531: 0.04527, 541: 0.01529,  # B0, B+, Bs, Bc
    5122: 0.04406, 5132: 0.0469, 5232: 0.0455, 5332: 0.0498,  # Lambda_b, Xi_b-, Xi_b0, Omega_b
    211: 780.45, 321: 371.2, 130: 1534.0, 310: 2.6844,  # pi+, K+, K_L, K_S
    3122: 7.89, 3222: 2.404, 3112: 4.434, 3312: 4.91, 3322: 8.71, 3334: 2.461,  # hyperons
}
INVISIBLE_PDG = (12, 14, 16, 1000012, 1000022, 1000039)
MAX_ANCESTRY_DEPTH = 64  # mother-chain walk limit (Pythia records are far shallower)

PARTICLE_FIELDS = ("px", "py", "pz", "E", "pdgId", "charge", "genPartIdx", "genJetIdx")
GENJET_FIELDS = (
    "pt", "eta", "phi", "mass", "partonFlavour", "hadronFlavour",
    "nConstituents", "nCharged", "chargedPtFraction", "photonPtFraction", "ptD", "axis2",
)
GENPART_FIELDS = tuple(nanoaod.GENPART)

# Jet flavour classes of the response shift.
LIGHT_QUARK, GLUON, CHARM, BOTTOM, UNKNOWN = range(5)
_TAIL_CLASSES = ("light", "charm", "bottom", "semileptonic")

STAGES = ("inputs", "jets", "pileup jets", "muons", "isolation", "met", "assemble")


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------
class _Cfg:
    """Read-only view of the detector config that names the missing key path on error."""

    def __init__(self, data: Mapping, path: str = "detector"):
        self._data = data
        self._path = path

    def __getitem__(self, key: str) -> Any:
        if not isinstance(self._data, Mapping) or key not in self._data:
            raise ConfigError(f"{self._path}.{key}: missing from the config (see config/README.md)")
        value = self._data[key]
        return _Cfg(value, f"{self._path}.{key}") if isinstance(value, Mapping) else value

    def f(self, key: str) -> float:
        return float(self[key])

    def knots(self, x_key: str, y_key: str) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(self[x_key], dtype=float)
        y = np.asarray(self[y_key], dtype=float)
        if x.shape != y.shape or x.ndim != 1 or len(x) == 0 or np.any(np.diff(x) <= 0):
            raise ConfigError(
                f"{self._path}.{x_key}/{y_key}: knots must increase strictly and have as many values"
            )
        return x, y


def _interp(abs_eta: np.ndarray, knots: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return np.interp(abs_eta, knots[0], knots[1])


def _wrap(phi: np.ndarray) -> np.ndarray:
    return (phi + np.pi) % (2 * np.pi) - np.pi


def _delta_r2(eta1, phi1, eta2, phi2) -> np.ndarray:
    return (eta1 - eta2) ** 2 + _wrap(phi1 - phi2) ** 2


def _flat(arr: ak.Array, field: str, dtype=np.float64) -> np.ndarray:
    return np.asarray(ak.to_numpy(ak.flatten(arr[field], axis=1)), dtype=dtype)


def _check_fields(arr: ak.Array, needed: tuple[str, ...], what: str) -> None:
    missing = [f for f in needed if f not in arr.fields]
    if missing:
        raise MissingColumnError(
            f"GeneratedEvents.{what} lacks field(s) {', '.join(missing)} needed by the detector "
            "simulation (see pipeline.samples.events.GeneratedEvents)"
        )


def same_event_pairs(evt_a: np.ndarray, b_offsets: np.ndarray, b_counts: np.ndarray):
    """All pairs (i, j) of objects i of set A and j of set B in the same event.

    ``evt_a`` is the event of each A object; B objects of event e occupy the flat positions
    ``b_offsets[e] : b_offsets[e] + b_counts[e]``. Returns flat index arrays ``(ia, ib)``.
    """
    nb = b_counts[evt_a]
    ia = np.repeat(np.arange(len(evt_a)), nb)
    first = np.cumsum(nb) - nb
    ib = np.repeat(b_offsets[evt_a] - first, nb) + np.arange(int(nb.sum()))
    return ia, ib


def sample_double_crystal_ball(rng, alpha_lo, n_lo, alpha_hi, n_hi) -> np.ndarray:
    """Standardised double-sided Crystal Ball variates (Gaussian core in [-alpha_lo, alpha_hi],
    power-law tails ``(B - t)^-n``), by exact inverse CDF. All arguments broadcast; n > 1."""
    alpha_lo, n_lo, alpha_hi, n_hi = np.broadcast_arrays(
        *(np.asarray(a, dtype=float) for a in (alpha_lo, n_lo, alpha_hi, n_hi))
    )
    size = alpha_lo.shape
    area_lo = n_lo / alpha_lo / (n_lo - 1.0) * np.exp(-0.5 * alpha_lo**2)
    area_hi = n_hi / alpha_hi / (n_hi - 1.0) * np.exp(-0.5 * alpha_hi**2)
    c_lo, c_hi = ndtr(-alpha_lo), ndtr(alpha_hi)
    area_core = np.sqrt(2.0 * np.pi) * (c_hi - c_lo)
    region = rng.random(size) * (area_lo + area_core + area_hi)
    u = 1.0 - rng.random(size)  # (0, 1]
    core = ndtri(np.clip(c_lo + u * (c_hi - c_lo), 1e-300, 1.0 - 1e-16))
    b_lo = n_lo / alpha_lo - alpha_lo
    lo = b_lo - (b_lo + alpha_lo) * u ** (-1.0 / (n_lo - 1.0))
    b_hi = n_hi / alpha_hi - alpha_hi
    hi = -b_hi + (b_hi + alpha_hi) * u ** (-1.0 / (n_hi - 1.0))
    return np.where(region < area_lo, lo, np.where(region < area_lo + area_core, core, hi))


def _truncated_power_law(rng, n: int, lo: float, hi: float, power: float) -> np.ndarray:
    """pT ~ pT^-power on [lo, hi] (power != 1), by inverse CDF."""
    u = rng.random(n)
    e = 1.0 - power
    return (lo**e + u * (hi**e - lo**e)) ** (1.0 / e)


def _sample_piecewise_density(rng, n: int, knots: tuple[np.ndarray, np.ndarray], hi: float) -> np.ndarray:
    """|x| in [0, hi] from a piecewise-linear density given at knots (constant beyond them)."""
    grid = np.linspace(0.0, hi, 512)
    dens = np.clip(np.interp(grid, *knots), 0.0, None)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(grid))])
    if cdf[-1] <= 0:
        return rng.random(n) * hi
    return np.interp(rng.random(n) * cdf[-1], cdf, grid)


def _compound_poisson_exp(rng, mean_count: np.ndarray, mean_pt: float) -> np.ndarray:
    """Sum of Poisson(mean_count) exponential pT's with mean ``mean_pt``."""
    k = rng.poisson(mean_count)
    return np.where(k > 0, rng.gamma(np.maximum(k, 1), mean_pt), 0.0)


def _sum_by(index: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    """Sum of ``weights`` per ``index`` in ``[0, n)`` (float, also when empty)."""
    return np.bincount(np.asarray(index, dtype=np.int64), weights, minlength=n).astype(np.float64)


def _count_by(index: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(np.asarray(index, dtype=np.int64), minlength=n)


def _binomial(rng, n: np.ndarray, p) -> np.ndarray:
    return rng.binomial(np.maximum(n, 0).astype(np.int64), np.clip(p, 0.0, 1.0))


# ---------------------------------------------------------------------------------------------
# flattened inputs
# ---------------------------------------------------------------------------------------------
class _Flat:
    """One collection as flat numpy arrays, event index, counts and offsets."""

    def __init__(self, counts: np.ndarray, **cols: np.ndarray):
        self.counts = np.asarray(counts, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self.evt = np.repeat(np.arange(len(self.counts)), self.counts)
        self.cols = cols

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self.__dict__["cols"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __len__(self) -> int:
        return len(self.evt)


def _flatten_inputs(gen: GeneratedEvents) -> tuple[_Flat, _Flat, _Flat]:
    _check_fields(gen.particles, PARTICLE_FIELDS, "particles")
    _check_fields(gen.gen_jets, GENJET_FIELDS, "gen_jets")
    _check_fields(gen.gen_part, GENPART_FIELDS, "gen_part")

    p = gen.particles
    px, py, pz, e = (_flat(p, f) for f in ("px", "py", "pz", "E"))
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.where(pt > 0, np.arcsinh(pz / np.where(pt > 0, pt, 1.0)), np.sign(pz) * 1e4)
    parts = _Flat(
        ak.to_numpy(ak.num(p, axis=1)),
        px=px, py=py, pz=pz, E=e, pt=pt, eta=eta, phi=np.arctan2(py, px),
        pdgId=_flat(p, "pdgId", np.int64), charge=_flat(p, "charge"),
        genPartIdx=_flat(p, "genPartIdx", np.int64), genJetIdx=_flat(p, "genJetIdx", np.int64),
    )
    gj = gen.gen_jets
    jets = _Flat(
        ak.to_numpy(ak.num(gj, axis=1)),
        **{f: _flat(gj, f, np.int64 if f in ("partonFlavour", "hadronFlavour", "nConstituents", "nCharged")
                   else np.float64) for f in GENJET_FIELDS},
    )
    gp = gen.gen_part
    genpart = _Flat(
        ak.to_numpy(ak.num(gp, axis=1)),
        **{f: _flat(gp, f, np.int64 if f in ("pdgId", "status", "statusFlags", "genPartIdxMother")
                   else np.float64) for f in GENPART_FIELDS},
    )
    return parts, jets, genpart


# ---------------------------------------------------------------------------------------------
# jets
# ---------------------------------------------------------------------------------------------
def _flavour_class(hadron: np.ndarray, parton: np.ndarray) -> np.ndarray:
    cls = np.full(len(hadron), UNKNOWN, dtype=np.int64)
    ap = np.abs(parton)
    cls[(ap >= 1) & (ap <= 5)] = LIGHT_QUARK
    cls[ap == 21] = GLUON
    cls[hadron == 4] = CHARM
    cls[hadron == 5] = BOTTOM
    return cls


def _particle_jet(parts: _Flat, jets: _Flat) -> np.ndarray:
    """Flat gen-jet index of each particle (-1: not clustered into a stored gen jet)."""
    ok = (parts.genJetIdx >= 0) & (parts.genJetIdx < jets.counts[parts.evt])
    return np.where(ok, jets.offsets[parts.evt] + parts.genJetIdx, -1)


def _jet_lepton_content(parts: _Flat, jets: _Flat, nu_cone_dr: float):
    """Per gen jet: muon and electron pT fractions of its constituents, and the pT fraction of
    neutrinos within ``nu_cone_dr`` (gen jets exclude neutrinos)."""
    njet = len(jets)
    gidx = _particle_jet(parts, jets)
    in_jet = gidx >= 0
    apdg = np.abs(parts.pdgId)
    denom = np.maximum(jets.pt, 1e-9)
    mu = _sum_by(gidx[in_jet & (apdg == 13)], parts.pt[in_jet & (apdg == 13)], njet) / denom
    el = _sum_by(gidx[in_jet & (apdg == 11)], parts.pt[in_jet & (apdg == 11)], njet) / denom

    is_nu = np.isin(apdg, (12, 14, 16))
    nu_pos = np.flatnonzero(is_nu)
    nu_counts = _count_by(parts.evt[nu_pos], len(jets.counts))
    nu_offsets = np.concatenate([[0], np.cumsum(nu_counts)[:-1]])
    ij, inu = same_event_pairs(jets.evt, nu_offsets, nu_counts)
    k = nu_pos[inu]
    close = _delta_r2(jets.eta[ij], jets.phi[ij], parts.eta[k], parts.phi[k]) < nu_cone_dr**2
    nu = _sum_by(ij[close], parts.pt[k][close], njet) / denom
    return mu, el, nu


def _btag(rng, flav_hadron: np.ndarray, pt: np.ndarray, eta: np.ndarray, c: _Cfg) -> np.ndarray:
    """btagDeepFlavB: sigmoid of a flavour-dependent Gaussian mixture in the logit."""
    n = len(pt)
    perf = c["performance"]
    abs_eta_max = c.f("abs_eta_max")
    d = (
        1.0
        - perf.f("abs_eta_coefficient") * (np.abs(eta) / max(abs_eta_max, 1e-6)) ** 2
        - perf.f("low_pt_coefficient") * np.exp(-(np.maximum(pt, 20.0) - 20.0) / perf.f("low_pt_scale_gev"))
        - perf.f("high_pt_coefficient") * np.log(np.maximum(pt / perf.f("high_pt_ref_gev"), 1.0))
    )
    d = np.clip(d, perf.f("minimum"), 1.0)
    pivot = perf.f("pivot")

    mean = np.empty(n)
    sigma = np.empty(n)
    is_b, is_c = flav_hadron == 5, flav_hadron == 4
    is_l = ~(is_b | is_c)
    u = rng.random(n)
    b_untag = is_b & (u < c["bottom_untagged"].f("fraction"))
    l_mis = is_l & (u < c["light_mistag"].f("fraction"))
    for mask, key in (
        (is_b & ~b_untag, "bottom"), (b_untag, "bottom_untagged"), (is_c, "charm"),
        (is_l & ~l_mis, "light"), (l_mis, "light_mistag"),
    ):
        mean[mask] = c[key].f("mean")
        sigma[mask] = c[key].f("sigma")
    z = pivot + d * (mean - pivot) + sigma * rng.standard_normal(n)
    score = expit(z)
    return np.where(np.abs(eta) < abs_eta_max, score, c.f("default"))


def _qgl(rng, ptd, axis2, mult, pt, eta, c: _Cfg) -> np.ndarray:
    """Quark-gluon likelihood-like discriminant from smeared ptD, ln(axis2) and multiplicity."""
    n = len(pt)
    ptd_r = np.clip(ptd + c.f("ptd_smear") * rng.standard_normal(n), 0.0, 1.0)
    nla = -(np.log(np.maximum(axis2, c.f("axis2_min"))) + c.f("log_axis2_smear") * rng.standard_normal(n))
    lpt = np.log(np.maximum(pt, 1.0) / c.f("pt_ref_gev"))
    t = (
        (ptd_r - (c.f("ptd_centre") + c.f("ptd_slope") * lpt)) / c.f("ptd_scale")
        + (nla - (c.f("neg_log_axis2_centre") + c.f("neg_log_axis2_slope") * lpt)) / c.f("neg_log_axis2_scale")
        - (mult - (c.f("multiplicity_centre") + c.f("multiplicity_slope") * lpt)) / c.f("multiplicity_scale")
    )
    k = c.f("sharpness") * _interp(np.abs(eta), c.knots("abs_eta", "sharpness_scale"))
    return expit(k * t)


def _simulate_jets(rng, jets: _Flat, parts: _Flat, n_pu: np.ndarray, det: _Cfg) -> dict:
    c = det["jets"]
    mean_pu = max(det["pileup"].f("mean_interactions"), 1e-9)
    n = len(jets)
    pt, eta, phi = jets.pt, jets.eta, jets.phi
    aeta = np.abs(eta)
    pu_ratio = n_pu[jets.evt] / mean_pu

    # reconstruction efficiency
    eff_c = c["efficiency"]
    eff = _interp(aeta, eff_c.knots("abs_eta", "plateau")) * ndtr(
        (pt - eff_c.f("pt50_gev")) / eff_c.f("width_gev")
    )
    found = rng.random(n) < eff

    # The muons of the jet are measured by the tracker (PF muons); the hadronic remainder gets the
    # calorimeter/PF response: median (flavour, neutral-hadron fraction), core width, tails.
    tc = c["tails"]
    mu_frac, el_frac, nu_frac = _jet_lepton_content(parts, jets, tc.f("nu_cone_dr"))
    mu_frac = np.clip(mu_frac, 0.0, 1.0)
    pt_had = np.maximum(pt * (1.0 - mu_frac), 1e-3)

    res = c["resolution"]
    noise = _interp(aeta, res.knots("abs_eta", "noise_gev"))
    fpu = res.f("noise_pileup_fraction")
    noise2 = noise**2 * ((1.0 - fpu) + fpu * pu_ratio)
    stoch = _interp(aeta, res.knots("abs_eta", "stochastic_sqrt_gev"))
    const = _interp(aeta, res.knots("abs_eta", "constant"))
    sigma = np.sqrt(noise2 / pt_had**2 + stoch**2 / pt_had + const**2)

    rc = c["response"]
    flav = _flavour_class(jets.hadronFlavour, jets.partonFlavour)
    shifts = np.array([rc.f("shift_light_quark"), rc.f("shift_gluon"), rc.f("shift_charm"),
                       rc.f("shift_bottom"), rc.f("shift_unknown")])
    f_nh = np.clip(1.0 - jets.chargedPtFraction - jets.photonPtFraction, 0.0, 1.0)
    damp = (rc.f("pt_ref_gev") / np.maximum(pt_had, rc.f("pt_ref_gev"))) ** rc.f("pt_power")
    mu = 1.0 + (shifts[flav] + rc.f("neutral_hadron_slope") * (f_nh - rc.f("neutral_hadron_reference"))) * damp

    tail_cls = np.zeros(n, dtype=np.int64)  # light
    tail_cls[jets.hadronFlavour == 4] = 1
    tail_cls[jets.hadronFlavour == 5] = 2
    tail_cls[(jets.hadronFlavour >= 4) & (nu_frac > tc.f("semileptonic_nu_fraction"))] = 3
    tail_par = np.array([[tc[k].f(p) for p in ("alpha_low", "n_low", "alpha_high", "n_high")]
                         for k in _TAIL_CLASSES])[tail_cls]
    t = sample_double_crystal_ball(rng, tail_par[:, 0], tail_par[:, 1], tail_par[:, 2], tail_par[:, 3])
    r_had = np.clip(mu + sigma * t, rc.f("min"), rc.f("max"))
    mu_scale = 1.0 + res.f("muon_relative") * rng.standard_normal(n)
    reco_pt = pt_had * r_had + pt * mu_frac * mu_scale
    r = reco_pt / np.maximum(pt, 1e-9)
    ptc = np.maximum(pt, 1.0)

    # direction and mass
    ac = c["angular"]
    ascale = _interp(aeta, ac.knots("abs_eta", "scale"))
    s_eta = ascale * np.hypot(ac.f("eta_const"), ac.f("eta_gev") / ptc)
    s_phi = ascale * np.hypot(ac.f("phi_const"), ac.f("phi_gev") / ptc)
    reco_eta = eta + s_eta * rng.standard_normal(n)
    reco_phi = _wrap(phi + s_phi * rng.standard_normal(n))
    mc = c["mass"]
    s_m = np.hypot(mc.f("sigma_const"), mc.f("sigma_gev") / ptc)
    reco_mass = np.abs(jets.mass * r * (1.0 + s_m * rng.standard_normal(n)))

    # constituents
    cc = c["constituents"]
    in_trk = aeta < cc.f("tracker_abs_eta")
    n_ch = jets.nCharged
    n_neu = np.maximum(jets.nConstituents - n_ch, 0)
    n_c = np.where(
        in_trk,
        _binomial(rng, n_ch, cc.f("charged_efficiency")) + _binomial(rng, n_neu, cc.f("neutral_efficiency")),
        _binomial(rng, jets.nConstituents, cc.f("forward_efficiency")),
    ) + rng.poisson(cc.f("pileup_per_interaction") * n_pu[jets.evt])
    n_c = np.maximum(n_c, 1)

    qgl = _qgl(rng, jets.ptD, jets.axis2, n_c, reco_pt, reco_eta, c["qgl"])
    btag = _btag(rng, jets.hadronFlavour, reco_pt, reco_eta, det["btag"])

    # jet ID: tight, and tightLepVeto from the lepton pT fractions
    jc = c["jet_id"]
    tight = rng.random(n) < _interp(np.abs(reco_eta), jc.knots("abs_eta", "tight_efficiency"))
    smear = jc.f("lepton_fraction_smear")
    lep_max = jc.f("lepton_fraction_max")
    lep_ok = (mu_frac + smear * rng.standard_normal(n) < lep_max) & (
        el_frac + smear * rng.standard_normal(n) < lep_max
    )
    lep_ok |= np.abs(reco_eta) >= jc.f("lepton_veto_abs_eta_max")
    jet_id = np.where(tight, np.where(lep_ok, 6, 2), 0)

    keep = found & (reco_pt > c.f("pt_min_gev")) & (np.abs(reco_eta) < c.f("abs_eta_max"))
    idx = np.flatnonzero(keep)
    return {
        "evt": jets.evt[idx],
        "pt": reco_pt[idx], "eta": reco_eta[idx], "phi": reco_phi[idx], "mass": reco_mass[idx],
        "btagDeepFlavB": btag[idx], "qgl": qgl[idx], "nConstituents": n_c[idx],
        "jetId": jet_id[idx], "hadronFlavour": jets.hadronFlavour[idx],
        "genJetIdx": (np.arange(n) - jets.offsets[jets.evt])[idx],
        "_global": idx, "_mu_scale": mu_scale[idx],
    }


def _pileup_jets(rng, n_pu: np.ndarray, real: dict, det: _Cfg) -> dict:
    pc = det["pileup"]["jets"]
    jc = det["jets"]
    eta_max = jc.f("abs_eta_max")
    counts = rng.poisson(pc.f("per_interaction") * n_pu)
    m = int(counts.sum())
    evt = np.repeat(np.arange(len(n_pu)), counts)
    pt = _truncated_power_law(rng, m, pc.f("pt_min_gev"), pc.f("pt_max_gev"), pc.f("pt_power"))
    eta = _sample_piecewise_density(rng, m, pc.knots("abs_eta", "density"), eta_max)
    eta *= np.where(rng.random(m) < 0.5, -1.0, 1.0)
    phi = rng.uniform(-np.pi, np.pi, m)
    mass = pt * rng.uniform(pc.f("mass_over_pt_min"), pc.f("mass_over_pt_max"), m)
    n_c = 1 + rng.poisson(pc.f("n_constituents_mean"), m)
    qgl = rng.beta(pc.f("qgl_beta_a"), pc.f("qgl_beta_b"), m)
    btag = _btag(rng, np.zeros(m, dtype=np.int64), pt, eta, det["btag"])
    jet_id = np.where(rng.random(m) < pc.f("tight_id_efficiency"), 6, 0)

    # merge with (drop if overlapping) a reconstructed hard-scatter jet
    rc = _count_by(real["evt"], len(n_pu))
    ro = np.concatenate([[0], np.cumsum(rc)[:-1]])
    i_f, i_r = same_event_pairs(evt, ro, rc)
    close = _delta_r2(eta[i_f], phi[i_f], real["eta"][i_r], real["phi"][i_r]) < pc.f("overlap_dr") ** 2
    overlap = np.zeros(m, dtype=bool)
    overlap[i_f[close]] = True
    keep = np.flatnonzero(~overlap & (pt > jc.f("pt_min_gev")))
    return {
        "evt": evt[keep], "pt": pt[keep], "eta": eta[keep], "phi": phi[keep], "mass": mass[keep],
        "btagDeepFlavB": btag[keep], "qgl": qgl[keep], "nConstituents": n_c[keep],
        "jetId": jet_id[keep], "hadronFlavour": np.zeros(len(keep), dtype=np.int64),
        "genJetIdx": np.full(len(keep), -1, dtype=np.int64),
    }


# ---------------------------------------------------------------------------------------------
# muons
# ---------------------------------------------------------------------------------------------
def pdg_lookup(table: Mapping[int, float], abs_pdg: np.ndarray, default: float = 0.0) -> np.ndarray:
    """``table[|pdgId|]`` per entry (e.g. :data:`CTAU_CM`), ``default`` where the code is not in it."""
    codes = np.array(sorted(table))
    values = np.array([table[c] for c in codes], dtype=np.float64)
    pos = np.clip(np.searchsorted(codes, abs_pdg), 0, len(codes) - 1)
    return np.where(codes[pos] == abs_pdg, values[pos], default)


def _ancestry(genpart: _Flat, start: np.ndarray, rng, max_radius_cm: float):
    """Walk the mother chain of GenPart entries ``start`` (flat indices).

    Returns the true production vertex (x, y, z) [cm] relative to the primary vertex, summed over
    every weakly decaying ancestor (flight ``beta gamma c tau Exp(1)`` along its momentum,
    transverse flight truncated at ``max_radius_cm``), and whether a hadron is among the ancestors.
    """
    n = len(start)
    vtx = np.zeros((n, 3))
    has_hadron = np.zeros(n, dtype=bool)
    mother_local = genpart.genPartIdxMother
    mother = np.where(mother_local >= 0, genpart.offsets[genpart.evt] + mother_local, -1)
    apdg = np.abs(genpart.pdgId)
    ctau_of = pdg_lookup(CTAU_CM, apdg)
    # mesons and baryons (not diquarks, not the beam nucleons)
    is_hadron = (apdg > 100) & (apdg < 1_000_000) & ((apdg // 10) % 10 != 0) & ~np.isin(apdg, (2212, 2112))

    cur = mother[start] if n else np.zeros(0, dtype=np.int64)
    for _ in range(MAX_ANCESTRY_DEPTH):
        alive = cur >= 0
        if not alive.any():
            break
        a = cur[alive]
        pdg_a = apdg[a]
        has_hadron[alive] |= is_hadron[a]
        ma = mother[a]
        same_as_mother = (ma >= 0) & (apdg[np.maximum(ma, 0)] == pdg_a)  # copies / B mixing: one flight
        ctau = np.where(same_as_mother, 0.0, ctau_of[a])
        lived = ctau > 0
        if lived.any():
            sel = np.flatnonzero(alive)[lived]
            ai = a[lived]
            m = np.maximum(genpart.mass[ai], 1e-3)
            pt, eta, phi = genpart.pt[ai], genpart.eta[ai], genpart.phi[ai]
            lam = pt / m * ctau[lived]  # mean transverse flight
            cap = 1.0 - np.exp(-max_radius_cm / np.maximum(lam, 1e-12))
            lt = -lam * np.log1p(-rng.random(len(ai)) * cap)
            vtx[sel, 0] += lt * np.cos(phi)
            vtx[sel, 1] += lt * np.sin(phi)
            vtx[sel, 2] += lt * np.sinh(eta)
        nxt = np.full(n, -1, dtype=np.int64)
        nxt[alive] = ma
        cur = nxt
    return vtx, has_hadron


def track_impact_parameters(vertex: np.ndarray, eta: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed dxy, dz [cm] (NanoAOD's sign convention) of a straight track of direction
    (eta, phi) from ``vertex`` (n, 3) [cm], relative to the primary vertex at the origin."""
    sin_phi, cos_phi = np.sin(phi), np.cos(phi)
    dxy = -vertex[:, 0] * sin_phi + vertex[:, 1] * cos_phi
    s = vertex[:, 0] * cos_phi + vertex[:, 1] * sin_phi
    dz = vertex[:, 2] - s * np.sinh(eta)
    return dxy, dz


def _impact_parameters(rng, vtx, pt, eta, phi, c: _Cfg):
    """dxy, dz (signed) and ip3d [cm] of a straight track from ``vtx`` with direction (eta, phi),
    smeared with the resolution."""
    n = len(pt)
    dxy, dz = track_impact_parameters(vtx, eta, phi)
    cosh = np.cosh(eta)
    ms = np.sqrt(cosh) / np.maximum(pt, 0.1)  # 1 / (pT sqrt(sin theta))
    s_dxy = np.hypot(c.f("dxy_const_cm"), c.f("dxy_ms_cm_gev") * ms)
    s_dz = np.hypot(c.f("dz_const_cm"), c.f("dz_ms_cm_gev") * ms) * cosh
    scale = np.where(rng.random(n) < c.f("tail_fraction"), c.f("tail_scale"), 1.0)
    dxy = dxy + scale * s_dxy * rng.standard_normal(n)
    dz = dz + scale * s_dz * rng.standard_normal(n)
    ip3d = np.sqrt(dxy**2 + (dz / cosh) ** 2)
    return dxy, dz, ip3d


def _smear_muon_momentum(rng, pt, eta, phi, charge, c: _Cfg):
    """Curvature smearing: returns reco pT, eta, phi, charge."""
    n = len(pt)
    rc = c["resolution"]
    aeta = np.abs(eta)
    b = _interp(aeta, rc.knots("abs_eta", "multiple_scattering"))
    a = _interp(aeta, rc.knots("abs_eta", "curvature_per_gev"))
    rel = np.hypot(a * pt, b)
    rel = rel * np.where(rng.random(n) < rc.f("tail_fraction"), rc.f("tail_scale"), 1.0)
    k = charge / np.maximum(pt, 1e-3)
    k_reco = k * (1.0 + rel * rng.standard_normal(n))
    q = np.where(k_reco >= 0, 1, -1)
    q = np.where(rng.random(n) < rc.f("charge_flip_probability"), -q, q)
    reco_pt = 1.0 / np.maximum(np.abs(k_reco), 1.0 / c.f("pt_max_gev"))
    reco_eta = eta + rc.f("eta_sigma") * rng.standard_normal(n)
    s_phi = np.hypot(rc.f("phi_const"), rc.f("phi_gev") / np.maximum(pt, 0.1))
    reco_phi = _wrap(phi + s_phi * rng.standard_normal(n))
    return reco_pt, reco_eta, reco_phi, q


def _muon_self_particle(parts: _Flat, genpart: _Flat, gp_idx: np.ndarray) -> np.ndarray:
    """Flat particle index of each GenPart muon ``gp_idx`` (flat), -1 if absent from particles."""
    out = np.full(len(gp_idx), -1, dtype=np.int64)
    if len(gp_idx) == 0:
        return out
    # exact: particles.genPartIdx
    lookup = np.full(len(genpart), -1, dtype=np.int64)
    has = parts.genPartIdx >= 0
    g = genpart.offsets[parts.evt[has]] + parts.genPartIdx[has]
    ok = g < len(genpart)
    lookup[g[ok]] = np.flatnonzero(has)[ok]
    out = lookup[gp_idx]
    # fallback: the closest particle muon within dR < 0.01
    miss = np.flatnonzero(out < 0)
    if len(miss):
        mu_pos = np.flatnonzero(np.abs(parts.pdgId) == 13)
        cnt = _count_by(parts.evt[mu_pos], len(parts.counts))
        off = np.concatenate([[0], np.cumsum(cnt)[:-1]])
        gm = gp_idx[miss]
        ia, ib = same_event_pairs(genpart.evt[gm], off, cnt)
        k = mu_pos[ib]
        dr2 = _delta_r2(genpart.eta[gm][ia], genpart.phi[gm][ia], parts.eta[k], parts.phi[k])
        good = dr2 < 1e-4
        order = np.lexsort((dr2[good], ia[good]))
        ia_g, k_g = ia[good][order], k[good][order]
        first = np.ones(len(ia_g), dtype=bool)
        first[1:] = ia_g[1:] != ia_g[:-1]
        out[miss[ia_g[first]]] = k_g[first]
    return out


def _isolation(rng, parts: _Flat, cand_evt, cand_eta, cand_phi, cand_self, cand_pt, n_pu, c: _Cfg):
    """pfRelIso04_all of each candidate from the particles around it plus pileup."""
    n_cand = len(cand_evt)
    trk_eta = c.f("tracker_abs_eta")
    apdg = np.abs(parts.pdgId)
    visible = ~np.isin(apdg, INVISIBLE_PDG)
    charged_trk = visible & (parts.charge != 0) & (np.abs(parts.eta) < trk_eta)
    neutral = visible & ~charged_trk
    # reconstructed pT of each particle, drawn once per particle
    npart = len(parts)
    reco = np.zeros(npart)
    ch_ok = charged_trk & (parts.pt > c.f("charged_pt_min_gev")) & (rng.random(npart) < c.f("charged_efficiency"))
    reco[ch_ok] = parts.pt[ch_ok]
    energy = np.maximum(parts.E, 1e-3)
    stoch = np.where(apdg == 22, c.f("photon_stochastic"), c.f("neutral_hadron_stochastic"))
    neu_reco = parts.pt * np.maximum(1.0 + stoch / np.sqrt(energy) * rng.standard_normal(npart), 0.0)
    neu_ok = neutral & (neu_reco > c.f("neutral_pt_min_gev"))
    reco[neu_ok] = neu_reco[neu_ok]
    used = np.flatnonzero(ch_ok | neu_ok)
    is_ch = ch_ok[used]
    # near the candidates only
    cnt = _count_by(parts.evt[used], len(parts.counts))
    off = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    ia, ib = same_event_pairs(cand_evt, off, cnt)
    k = used[ib]
    inside = (_delta_r2(cand_eta[ia], cand_phi[ia], parts.eta[k], parts.phi[k]) < c.f("cone_dr") ** 2) & (
        k != cand_self[ia]
    )
    ch_sum = _sum_by(ia[inside & is_ch[ib]], reco[k][inside & is_ch[ib]], n_cand)
    neu_sum = _sum_by(ia[inside & ~is_ch[ib]], reco[k][inside & ~is_ch[ib]], n_cand)
    # pileup in the cone: compound Poisson, charged removed by vertex association but for a
    # misassociated fraction, neutral corrected with delta-beta
    npu = n_pu[cand_evt]
    mean_pt = c.f("pileup_particle_mean_pt_gev")
    mis = c.f("pileup_charged_misassociation")
    n_ch = c.f("pileup_charged_per_interaction") * npu
    pu_ch_kept = _compound_poisson_exp(rng, mis * n_ch, mean_pt)  # misassociated to the PV
    pu_ch_removed = _compound_poisson_exp(rng, (1.0 - mis) * n_ch, mean_pt)
    pu_neu = _compound_poisson_exp(rng, c.f("pileup_neutral_per_interaction") * npu, mean_pt)
    iso = ch_sum + pu_ch_kept + np.maximum(0.0, neu_sum + pu_neu - c.f("delta_beta") * pu_ch_removed)
    return iso / np.maximum(cand_pt, 1e-3)


def _id_probabilities(pt, cls_name: str, c: _Cfg, pt_min: float):
    idc = c["id"][cls_name]
    low = 1.0 - c["id"].f("low_pt_loss") * np.exp(-np.maximum(pt - pt_min, 0.0) / c["id"].f("low_pt_scale_gev"))
    return idc.f("medium") * low, idc.f("tight_given_medium")


def _simulate_muons(rng, genpart: _Flat, parts: _Flat, n_pu: np.ndarray, det: _Cfg, stage):
    c = det["muons"]
    pt_min, eta_max = c.f("pt_min_gev"), c.f("abs_eta_max")

    # --- real muons from stable GenPart muons
    cand = np.flatnonzero((np.abs(genpart.pdgId) == 13) & (genpart.status == 1))
    g_pt, g_eta, g_phi = genpart.pt[cand], genpart.eta[cand], genpart.phi[cand]
    ec = c["efficiency"]
    p = g_pt * np.cosh(g_eta)
    eff = _interp(np.abs(g_eta), ec.knots("abs_eta", "plateau")) * ndtr(
        (p - ec.f("p50_gev")) / ec.f("p_width_gev")
    )
    found = rng.random(len(cand)) < eff
    cand = cand[found]
    g_pt, g_eta, g_phi = g_pt[found], g_eta[found], g_phi[found]
    g_q = -np.sign(genpart.pdgId[cand]).astype(float)
    r_pt, r_eta, r_phi, r_q = _smear_muon_momentum(rng, g_pt, g_eta, g_phi, g_q, c)
    ipc = c["impact_parameter"]
    vtx, from_hadron = _ancestry(genpart, cand, rng, ipc.f("max_decay_radius_cm"))
    flags = genpart.statusFlags[cand]
    prompt_flag = (flags & ((1 << nanoaod.STATUS_FLAG_BITS["isPrompt"])
                            | (1 << nanoaod.STATUS_FLAG_BITS["isPromptTauDecayProduct"]))) != 0
    nonprompt = from_hadron | ((flags != 0) & ~prompt_flag)
    dxy, dz, ip3d = _impact_parameters(rng, vtx, g_pt, g_eta, g_phi, ipc)
    self_part = _muon_self_particle(parts, genpart, cand)
    real = {
        "evt": genpart.evt[cand], "pt": r_pt, "eta": r_eta, "phi": r_phi, "charge": r_q,
        "dxy": dxy, "dz": dz, "ip3d": ip3d, "genPartIdx": cand - genpart.offsets[genpart.evt[cand]],
        "_self": self_part, "_nonprompt": nonprompt, "_fake": np.zeros(len(cand), dtype=bool),
        "_gen_pt": g_pt, "_gen_eta": g_eta, "_gen_phi": g_phi,
    }

    # --- fake muons from charged pions and kaons
    fc = c["fakes"]
    apdg = np.abs(parts.pdgId)
    p_had = parts.pt * np.cosh(parts.eta)
    prob = np.where(apdg == 211, fc.f("pion_probability"), np.where(apdg == 321, fc.f("kaon_probability"), 0.0))
    prob = np.where((parts.charge != 0) & (p_had > fc.f("p_min_gev")) & (np.abs(parts.eta) < eta_max), prob, 0.0)
    fk = np.flatnonzero(rng.random(len(parts)) < prob)
    nf = len(fk)
    f_pt = parts.pt[fk] * rng.uniform(fc.f("momentum_fraction_min"), 1.0, nf)
    f_q = np.sign(parts.charge[fk])
    fr_pt, fr_eta, fr_phi, fr_q = _smear_muon_momentum(rng, f_pt, parts.eta[fk], parts.phi[fk], f_q, c)
    f_dxy, f_dz, _ = _impact_parameters(rng, np.zeros((nf, 3)), f_pt, parts.eta[fk], parts.phi[fk], ipc)
    f_dxy = f_dxy + rng.laplace(0.0, fc.f("dxy_scale_cm"), nf)
    f_dz = f_dz + rng.laplace(0.0, fc.f("dz_scale_cm"), nf)
    fake = {
        "evt": parts.evt[fk], "pt": fr_pt, "eta": fr_eta, "phi": fr_phi, "charge": fr_q,
        "dxy": f_dxy, "dz": f_dz, "ip3d": np.sqrt(f_dxy**2 + (f_dz / np.cosh(fr_eta)) ** 2),
        "genPartIdx": np.full(nf, -1, dtype=np.int64),
        "_self": fk, "_nonprompt": np.ones(nf, dtype=bool), "_fake": np.ones(nf, dtype=bool),
        "_gen_pt": f_pt, "_gen_eta": parts.eta[fk], "_gen_phi": parts.phi[fk],
    }
    mu = {k: np.concatenate([real[k], fake[k]]) for k in real}
    keep = (mu["pt"] > pt_min) & (np.abs(mu["eta"]) < eta_max)
    mu = {k: v[keep] for k, v in mu.items()}
    stage("isolation")

    # --- isolation (from the particles near the true direction)
    mu["pfRelIso04_all"] = _isolation(
        rng, parts, mu["evt"], mu["_gen_eta"], mu["_gen_phi"], mu["_self"], mu["pt"], n_pu, c["isolation"]
    )

    # --- identification
    nm = len(mu["pt"])
    p_med = np.empty(nm)
    p_tight = np.empty(nm)
    for name, mask in (
        ("prompt", ~mu["_nonprompt"] & ~mu["_fake"]), ("nonprompt", mu["_nonprompt"] & ~mu["_fake"]),
        ("fake", mu["_fake"]),
    ):
        pm, pt_ = _id_probabilities(mu["pt"][mask], name, c, pt_min)
        p_med[mask] = pm
        p_tight[mask] = pt_
    idc = c["id"]
    medium = rng.random(nm) < p_med
    tight = (
        medium & (rng.random(nm) < p_tight)
        & (np.abs(mu["dxy"]) < idc.f("tight_dxy_max_cm")) & (np.abs(mu["dz"]) < idc.f("tight_dz_max_cm"))
    )
    mu["mediumId"], mu["tightId"] = medium, tight
    mu["mass"] = np.full(nm, c.f("mass_gev"))
    return mu


# ---------------------------------------------------------------------------------------------
# MET
# ---------------------------------------------------------------------------------------------
def _met(rng, parts: _Flat, jets: _Flat, real_jets: dict, pu_jets: dict, muons: dict, n_pu, det: _Cfg):
    c = det["met"]
    n_evt = len(parts.counts)
    apdg = np.abs(parts.pdgId)
    visible = ~np.isin(apdg, INVISIBLE_PDG) & (np.abs(parts.eta) < c.f("abs_eta_max"))

    jet_reco = np.zeros(len(jets), dtype=bool)
    jet_reco[real_jets["_global"]] = True
    pj = _particle_jet(parts, jets)
    in_reco_jet = np.zeros(len(parts), dtype=bool)
    in_reco_jet[pj >= 0] = jet_reco[pj[pj >= 0]]

    real_mu = ~muons["_fake"] & (muons["_self"] >= 0)
    mu_part = muons["_self"][real_mu]
    is_reco_mu = np.zeros(len(parts), dtype=bool)
    is_reco_mu[mu_part] = True

    # unclustered: visible particles neither in a reconstructed jet nor a reconstructed muon
    unc = visible & ~in_reco_jet & ~is_reco_mu
    ux = _sum_by(parts.evt[unc], parts.px[unc], n_evt)
    uy = _sum_by(parts.evt[unc], parts.py[unc], n_evt)
    sumet = _sum_by(parts.evt[unc], parts.pt[unc], n_evt)

    # jets, with the reco muons clustered inside them taken out (as the jet measured them)
    resp = np.zeros(len(jets))
    resp[real_jets["_global"]] = real_jets["_mu_scale"]
    mu_in_jet = in_reco_jet[mu_part]
    mj = pj[mu_part][mu_in_jet]
    sub_x = _sum_by(mj, parts.px[mu_part][mu_in_jet] * resp[mj], len(jets))
    sub_y = _sum_by(mj, parts.py[mu_part][mu_in_jet] * resp[mj], len(jets))
    g = real_jets["_global"]
    jx = real_jets["pt"] * np.cos(real_jets["phi"]) - sub_x[g]
    jy = real_jets["pt"] * np.sin(real_jets["phi"]) - sub_y[g]
    sx = _sum_by(real_jets["evt"], jx, n_evt) + _sum_by(pu_jets["evt"], pu_jets["pt"] * np.cos(pu_jets["phi"]), n_evt)
    sy = _sum_by(real_jets["evt"], jy, n_evt) + _sum_by(pu_jets["evt"], pu_jets["pt"] * np.sin(pu_jets["phi"]), n_evt)
    # reconstructed (non-fake) muons
    rm = ~muons["_fake"]
    sx += _sum_by(muons["evt"][rm], muons["pt"][rm] * np.cos(muons["phi"][rm]), n_evt)
    sy += _sum_by(muons["evt"][rm], muons["pt"][rm] * np.sin(muons["phi"][rm]), n_evt)
    # unclustered, with response and resolution
    sigma = np.sqrt(
        c.f("unclustered_constant_gev") ** 2
        + c.f("unclustered_stochastic_sqrt_gev") ** 2 * sumet
        + c.f("pileup_sigma_gev") ** 2 * n_pu
    )
    r_u = c.f("unclustered_response")
    sx += r_u * ux + sigma * rng.standard_normal(n_evt)
    sy += r_u * uy + sigma * rng.standard_normal(n_evt)
    return np.hypot(sx, sy), np.arctan2(-sy, -sx)


# ---------------------------------------------------------------------------------------------
# assembly
# ---------------------------------------------------------------------------------------------
def _assemble(parts_list: list[dict], spec: Mapping[str, type], n_evt: int) -> ak.Array:
    """Concatenate flat collections, order by event then decreasing pT, cast to the contract and
    build a jagged record array."""
    cat = {k: np.concatenate([np.asarray(p[k]) for p in parts_list]) for k in ("evt", *spec)}
    order = np.lexsort((-cat["pt"], cat["evt"]))
    counts = _count_by(cat["evt"], n_evt)
    return ak.zip({f: ak.unflatten(cat[f][order].astype(np.dtype(dt)), counts) for f, dt in spec.items()})


def simulate(gen: GeneratedEvents, det_cfg: dict, rng: np.random.Generator, progress: bool = True) -> dict:
    """Run the reference detector simulation on one chunk of generated events.

    Parameters
    ----------
    gen
        The generator-level events (:class:`~pipeline.samples.events.GeneratedEvents`).
    det_cfg
        The ``detector`` block of the config (schema: ``workflow/schemas/detector.schema.yaml``).
    rng
        The only source of randomness: the same generator state gives the same output.
    progress
        Show a tqdm bar over the simulation stages.

    Returns
    -------
    dict
        ``{"Jet": ak.Array, "Muon": ak.Array, "MET_pt": np.ndarray, "MET_phi": np.ndarray}``:
        Jet and Muon are jagged records with exactly the fields and dtypes of
        :data:`pipeline.nanoaod.JET` / :data:`pipeline.nanoaod.MUON`, pT-ordered in each event;
        ``Jet.genJetIdx`` indexes ``gen.gen_jets`` and ``Muon.genPartIdx`` indexes
        ``gen.gen_part`` (-1: pileup jet / fake muon); MET float32.
    """
    from tqdm.auto import tqdm

    det = _Cfg(det_cfg)
    n_evt = len(gen)
    bar = tqdm(total=len(STAGES), desc="detsim", unit="stage", disable=not progress, leave=False)
    clock = {"t": time.perf_counter(), "stage": STAGES[0]}

    def stage(name: str) -> None:
        """Close the running stage (logged with its duration) and start ``name``."""
        now = time.perf_counter()
        log.debug("detsim: %s took %.3f s", clock["stage"], now - clock["t"])
        clock.update(t=now, stage=name)
        bar.set_postfix_str(name)
        bar.update(1)

    try:
        parts, jets, genpart = _flatten_inputs(gen)
        n_pu = rng.poisson(det["pileup"].f("mean_interactions"), n_evt)
        stage("jets")
        real_jets = _simulate_jets(rng, jets, parts, n_pu, det)
        stage("pileup jets")
        pu_jets = _pileup_jets(rng, n_pu, real_jets, det)
        stage("muons")
        muons = _simulate_muons(rng, genpart, parts, n_pu, det, stage)
        stage("met")
        met_pt, met_phi = _met(rng, parts, jets, real_jets, pu_jets, muons, n_pu, det)
        stage("assemble")
        out = {
            "Jet": _assemble([real_jets, pu_jets], nanoaod.JET, n_evt),
            "Muon": _assemble([muons], nanoaod.MUON, n_evt),
            "MET_pt": met_pt.astype(np.float32),
            "MET_phi": met_phi.astype(np.float32),
        }
        stage("done")
    finally:
        bar.close()
    log.info(
        "detsim: %d events -> %d jets (%d pileup), %d muons (%d fake)",
        n_evt, len(real_jets["pt"]) + len(pu_jets["pt"]), len(pu_jets["pt"]),
        len(muons["pt"]), int(muons["_fake"].sum()),
    )
    return out
