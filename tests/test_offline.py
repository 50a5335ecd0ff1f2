"""Nothing leaves the machine and nothing unsafe loads. Every test in this suite runs with connections off the
machine blocked (conftest.py; the notebooks' kernels too, see test_notebooks.py); the tests here check that the
block is real, that the main paths work under it, that weights never come from pickle, and that
``trust_remote_code`` is never switched on."""

from __future__ import annotations

import json
import re
import socket
import urllib.request

import no_network
import pytest
import torch
from ipywidgets.widgets.tests.utils import setup_test_comm, teardown_test_comm

import attnsparse_widget as aw
from attnsparse_widget.widget import AttentionDiffWidget

pytestmark = pytest.mark.model

TEXT = "The lighthouse keeper wrote in his log every evening."


def test_the_network_is_really_blocked():
    with pytest.raises(no_network.NetworkBlocked):
        socket.create_connection(("93.184.215.14", 80), timeout=1)
    with pytest.raises(no_network.NetworkBlocked):
        socket.getaddrinfo("huggingface.co", 443)
    with pytest.raises(OSError):
        urllib.request.urlopen("https://huggingface.co/api/models/gpt2", timeout=2)
    server = socket.socket()  # loopback stays open
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    socket.create_connection(server.getsockname(), timeout=1).close()
    server.close()


@pytest.fixture
def no_pickle(monkeypatch):
    """``torch.load`` (pickle) raises: weights must come from safetensors or GGUF."""

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load (pickle) was called")

    monkeypatch.setattr(torch, "load", refuse)


def test_default_model_compare_widget_and_gif_offline_without_pickle(no_pickle, tmp_path):
    model, tok = aw.load_model(fresh=True)  # a new copy, read from the safetensors cache
    res = aw.compare((model, tok), TEXT, mask="sink_window", sparsity=0.5, continuation_tokens=4)
    assert res.metrics.sparse_ppl > 0 and res.continuations["dense"]
    report = res.export_gif(tmp_path / "layers.gif", layers=range(0, 30, 10), duration_ms=100)
    assert report.frames == 3 and report.path.read_bytes()[:6] == b"GIF89a"
    html = res.to_html(tmp_path / "page.html")
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html)  # the page loads nothing from anywhere
    setup_test_comm()
    try:
        w = AttentionDiffWidget((model, tok), threaded=False, text=TEXT, per_layer=False)
        assert w.status["error"] is None and w.view["figure"]
        w.close()
    finally:
        teardown_test_comm()


def test_remote_code_is_never_run(tmp_path):
    """A local folder whose config asks for custom modelling code: refused with a clear message, the code never
    imported (it would write a marker file)."""
    folder = tmp_path / "custom"
    folder.mkdir()
    marker = tmp_path / "remote-code-ran"
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (folder / "configuration_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nfrom transformers import PretrainedConfig\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
    )
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "evil",
                "architectures": ["EvilForCausalLM"],
                "auto_map": {
                    "AutoConfig": "configuration_evil.EvilConfig",
                    "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM",
                },
            }
        )
    )
    with pytest.raises((ValueError, OSError), match="trust_remote_code"):
        aw.load_model(str(folder))
    assert not marker.exists()
