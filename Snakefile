# ML for particle physics, from generator to firmware. See README.md and config/README.md.
from snakemake.utils import min_version

min_version("9.0")

report: "workflow/report/workflow.rst"

# The laptop default, unless the command line names its own --configfile (Snakemake would
# otherwise merge the two, leaking the default's samples into a cluster config).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/tracking.smk"
include: "workflow/rules/samples.smk"
include: "workflow/rules/skim.smk"
include: "workflow/rules/flashsim.smk"
include: "workflow/rules/calo.smk"
include: "workflow/rules/classifier.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/trigger.smk"


rule all:
    input:
        all_outputs(),
    default_target: True
