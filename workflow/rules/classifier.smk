# DisCo-regularised classifiers (src/pipeline/classifier): train_classifier per lambda ->
# evaluate_classifier -> export of the chosen model for the analysis.
