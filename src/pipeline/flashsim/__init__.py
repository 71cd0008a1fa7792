"""FlashSim: conditional normalizing flows that generate NanoAOD Jet and Muon collections from
generator level (issue 3).

:mod:`~pipeline.flashsim.preprocessing`  reco variables <-> the flows' unconstrained space
:mod:`~pipeline.flashsim.conditions`     gen-level conditions from Gen* branches; the held-out split
:mod:`~pipeline.flashsim.model`          efficiency net, zuko NSF coupling flow, fakes; one-file checkpoint
:mod:`~pipeline.flashsim.train`          rule ``train_flow``
:mod:`~pipeline.flashsim.generate`       rule ``flash_generate``
:mod:`~pipeline.flashsim.validate`       rule ``validate_flashsim``
"""
