# Trigger firmware (src/pipeline/trigger): train_trigger -> hls4ml C-simulation and RTL ->
# vendor synthesis where the tools exist.
