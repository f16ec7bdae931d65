"""The checksums of the tests' stand-in downloads (`conftest.tfds_korean_downloads`), registered for the tfds-korean
builders in place of the upstream files' (the stand-ins are not those files). Run as a script, it runs a repository
script with them registered, everything else as a user runs it:

    python tests/stand_in_checksums.py CHECKSUMS_DIR SCRIPT [FLAGS...]
"""

import pathlib
import runpy
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent


def url_infos(directory):
    """{dataset: {url: tfds UrlInfo}} from the `<dataset>.tsv` checksum files in `directory`."""
    import tensorflow_datasets as tfds

    return {path.stem: tfds.download.checksums.load_url_infos(path) for path in sorted(directory.glob("*.tsv"))}


if __name__ == "__main__":
    checksums_dir, script, *script_args = sys.argv[1:]
    sys.path.insert(0, str(REPO))
    import data

    for name, infos in url_infos(pathlib.Path(checksums_dir)).items():
        data.BUILDERS[name].url_infos = infos
    sys.argv = [script, *script_args]
    runpy.run_path(str(REPO / script), run_name="__main__")
