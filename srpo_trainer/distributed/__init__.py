"""Scale-out of ``srpo train``: Ray rollout actors and a ``torch.distributed`` data-parallel update.

``config.py`` is the ``distributed.*`` section, ``update_group.py`` one rank's share of a DDP update (torch only),
``ray_backend.py`` the Ray side (imported only with ``distributed.backend=ray``).
"""
