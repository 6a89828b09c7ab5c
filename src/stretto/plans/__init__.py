"""Plans: what is to be done, as values.

Owns the Task, Stage, Plan and TaskGraph values; loading plan YAML with file:line:column errors
(:mod:`~stretto.plans.yamlsource`, :mod:`~stretto.plans.plan`); the schema, the JSON Schema and
validation messages (:mod:`~stretto.plans.schema`); ids, references, cycles and owned paths
checked (:mod:`~stretto.plans.resolve`); critical paths (:mod:`~stretto.plans.graph`); the
owned-file glob algebra (:mod:`~stretto.plans.paths`).

Pure: no processes, no git, no journal. May import only the base modules (``stretto.errors``,
``stretto.schemas``, ``stretto.files``).
"""
