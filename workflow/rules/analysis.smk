# The VBF H->mumu analysis in Coffea on full and flash samples (src/pipeline/analysis), their
# comparison, the pyhf closure test and the report.
