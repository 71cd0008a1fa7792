"""Built-in sample production: Pythia8 generation, gen jets, the reference detector simulation.

- :mod:`pipeline.samples.events`     the container passed from the generator to the detector sim
- :mod:`pipeline.samples.generator`  Pythia8 + FastJet: GenPart, GenJet, GenMET, final-state particles
- :mod:`pipeline.samples.detsim`     the reference ("full") detector simulation: Jet, Muon, MET
- :mod:`pipeline.samples.produce`    one chunk end to end, written as NanoAOD
- :mod:`pipeline.samples.plots`      sanity plots of a sample
"""
