"""NIR export of rate-coded IF nets (``export``), writing .nir files (``files``) and running an
exported graph in snnTorch, an independent NIR consumer (``consumer``). Needs the optional
extra ``nir`` (nir, h5py); only ``export-nir`` (``api.export_nir_file``) and the tests import it."""
