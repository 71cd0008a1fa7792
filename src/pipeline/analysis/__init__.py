"""The VBF H -> mu mu analysis in Coffea, full simulation against FlashSim.

:mod:`.processor`  the Coffea processor (object and VBF selection, regions, ``hist`` histograms,
                   cutflow, DisCo classifier score) -- the same on every sample, full or flash
:mod:`.execute`    ``processor.Runner`` with FuturesExecutor or DaskExecutor, normalisation,
                   coffea serialisation of the output
:mod:`.compare`    full vs flash overlays with ratio panels and chi2/ndf, the yields table
:mod:`.fit`        the pyhf closure test (expected significance, signal-strength uncertainty,
                   cross fits of each model to the other's Asimov data)

The report tables of every stage live in :mod:`pipeline.report`.
"""
