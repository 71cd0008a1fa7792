"""FlashSim: conditional normalizing flows that generate NanoAOD Jet and Muon collections from
generator level (issue 3).

:mod:`~pipeline.flashsim.conditions`     gen-level conditions from Gen* branches (shared physics only)
:mod:`~pipeline.flashsim.tables`         training, fake and event tables (rule ``training_table``)
:mod:`~pipeline.flashsim.preprocessing`  reco variables <-> the flows' unconstrained space
:mod:`~pipeline.flashsim.model`          efficiency net, zuko NSF coupling flow, fakes; one-file checkpoint
:mod:`~pipeline.flashsim.train`          :func:`~pipeline.flashsim.train.train_object` (rule ``train_flow``)
:mod:`~pipeline.flashsim.generate`       :func:`~pipeline.flashsim.generate.flash_generate` (rule ``flash_generate``)
:mod:`~pipeline.flashsim.validate`       :func:`~pipeline.flashsim.validate.validate_flashsim` (rule ``validate_flashsim``)

The held-out split of the validation is :func:`pipeline.seeds.is_holdout`.
"""
