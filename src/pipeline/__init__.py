"""ML for particle physics: FlashSim flows, calorimeter GANs, DisCo classifiers, trigger firmware.

The library behind the Snakemake workflow. Each capability is a module or subpackage:

- :mod:`pipeline.config`     load and validate the YAML configuration (JSON schema)
- :mod:`pipeline.nanoaod`    the NanoAOD data contract: branch names and types, in one place
- :mod:`pipeline.io`         ROOT/parquet/JSON reading and atomic writing with clear errors
- :mod:`pipeline.samples`    Pythia8 generation, gen jets, the reference detector simulation
- :mod:`pipeline.features`   event-level derived quantities (m_mumu, m_jj, z*, ...)
- :mod:`pipeline.skim`       preselection, skims, cutflows and the flow training tables
- :mod:`pipeline.tracking`   MLflow provenance
- :mod:`pipeline.plotting`   hist + mplhep plotting helpers
"""

__version__ = "0.1.0"
