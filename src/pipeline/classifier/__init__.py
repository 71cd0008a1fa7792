"""DisCo-regularised signal/background classifiers (arXiv:2001.05310).

A network trained to select VBF H -> mu mu must not learn m_mumu, the variable fitted afterwards,
or the background spectrum that survives a cut on its score gets a fake peak ("sculpting"). The
loss adds ``lambda * dCor^2(m_mumu, score)`` computed on the background events of each batch with
their weights (:func:`pipeline.classifier.disco.distance_corr_sq`).

Modules: :mod:`.disco` (weighted distance correlation in torch), :mod:`.data` (population, inputs,
event-number split), :mod:`.model` (the scorer with its input scaling and the Lightning module),
:mod:`.train` (rule ``train_classifier``), :mod:`.evaluate` (rule ``evaluate_classifier``: AUC,
R50, 1/JSD and its statistical floor, dCor, plots), :mod:`.export` (rule ``export_classifier``:
the chosen model as TorchScript for the analysis, and :func:`~.export.load_scorer`).
:mod:`.naming` holds what the Snakemake rule file needs (lambda tags) without importing torch;
the package imports nothing eagerly for the same reason.
"""
