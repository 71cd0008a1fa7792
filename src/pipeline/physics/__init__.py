"""Particle physics shared by the generator, the reference detector simulation and the FlashSim
conditions: the bottom layer of the library (it imports nothing from ``pipeline``).

- :mod:`pipeline.physics.pdg`       PDG tables: lifetimes, masses, neutrinos and invisible particles
- :mod:`pipeline.physics.ancestry`  the GenPart mother-chain walk
- :mod:`pipeline.physics.tracks`    straight-track geometry (impact parameters)
"""
