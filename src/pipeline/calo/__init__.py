"""Calorimeter fast simulation in the CaloChallenge format.

- :mod:`~pipeline.calo.geometry`: layers x angular x radial voxels; CaloChallenge binning XML.
- :mod:`~pipeline.calo.showersim`: the reference shower simulation (GFlash-like, spot by spot).
- :mod:`~pipeline.calo.data`: CaloChallenge HDF5 reading (checked) and writing (atomic).
- :mod:`~pipeline.calo.features`: high-level shower features (numpy and differentiable torch).
- :mod:`~pipeline.calo.gan`: the energy-conditioned WGAN-GP (Lightning).
- :mod:`~pipeline.calo.train`: training and generation entry points of the Snakemake rules.
- :mod:`~pipeline.calo.validate`: CaloChallenge-style validation (histograms, separation
  power, classifier AUC).
"""
