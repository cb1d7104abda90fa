"""The ``srpo`` command line and the end-to-end demo: the layer above the core (``srpo``), the trainer
(``srpo_trainer``) and the exporter (``srpo_export``), the only one that imports all of them."""
