"""ML for particle physics: FlashSim flows, calorimeter GANs, DisCo classifiers, trigger firmware.

The library behind the Snakemake workflow. Each capability is a module or subpackage:

- :mod:`pipeline.config`     load and validate the YAML configuration (JSON schema)
- :mod:`pipeline.nanoaod`    the NanoAOD data contract: branch names and types, in one place
- :mod:`pipeline.io`         ROOT/parquet/JSON reading and atomic writing with clear errors
- :mod:`pipeline.samples`    Pythia8 generation, gen jets, the reference detector simulation
- :mod:`pipeline.features`   event-level derived quantities (m_mumu, m_jj, z*, ...)
- :mod:`pipeline.skim`       preselection, skims and cutflows
- :mod:`pipeline.normalisation`  cross sections, sums of weights, luminosity normalisation
- :mod:`pipeline.flashsim`   FlashSim: training tables, conditions, flows, generation, validation
- :mod:`pipeline.provenance` provenance tags: git state, config and input SHA-256s (no MLflow)
- :mod:`pipeline.tracking`   the MLflow store: tracked runs, Lightning logger, ``ui`` CLI
- :mod:`pipeline.stats`      profiles, binned quantiles, Clopper-Pearson efficiencies (no drawing)
- :mod:`pipeline.plotting`   hist + mplhep plotting helpers; the style is the ``plotting.style()`` context
"""

__version__ = "0.1.0"
