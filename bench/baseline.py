#!/usr/bin/env python3
"""What lecr's `bench encode` is compared with: the same work done by PyTorch and ONNX Runtime.

Figures (each printed as one line `RESULT <engine> <figure> <key>=<value> ...`, medians of --runs):
  torch encode        sentences/s: batches of --batch texts padded to --max-len tokens, encoder
                      forward, mean pooling over the mask, L2 normalisation (inference mode)
  torch train-step    seconds of one step: --pairs topic texts and --pairs content texts through
                      the encoder (train mode, dropout on), symmetric InfoNCE with label smoothing
                      0.1 and a learnable temperature, backward, AdamW
  torch train-step-rss  peak resident memory (MiB) of the process while it runs the train steps
  ort-fp32 encode     the encode figure with the model exported to ONNX, ONNX Runtime on the CPU
  ort-int8 encode     the same after ONNX Runtime's dynamic int8 quantization (per-channel
                      weights), the usual way to run a sentence encoder in int8 on a CPU
  torch-bf16 encode   the torch encode figure under bf16 autocast
                      (torch.autocast("cpu", dtype=torch.bfloat16)), how a PyTorch user runs
                      a sentence encoder in bf16 on a CPU (oneDNN: AVX512_BF16 or AMX)
  torch-bf16 train-step  the train-step figure with the forward pass and loss under bf16
                      autocast (f32 weights and AdamW state: PyTorch's mixed precision on a
                      CPU); with its -rss figure. Needs both `bf16` and `train-step` in --only
  ov-fp32 encode      the encode figure with OpenVINO (`openvino.convert_model` of the torch
                      model, CPU plugin, INFERENCE_PRECISION_HINT f32, --threads inference
                      threads, latency hint)
  ov-bf16 encode      the same with INFERENCE_PRECISION_HINT bf16 (AMX or AVX512_BF16 where the
                      CPU has them; where it has neither, OpenVINO runs f32 and says so)

Which kernels the peers ran is printed before the figures (`kernels ...` lines): oneDNN's
verbose log of one torch f32 and one torch bf16 batch (a child process with ONEDNN_VERBOSE=1:
the matmul implementations and their instruction sets), OpenVINO's execution precision of
its compiled model and of its matrix products, ONNX Runtime's execution providers.

Environment (a throw-away venv, a few GB):
  python3 -m venv /tmp/lecr-bench && /tmp/lecr-bench/bin/pip install \
      torch transformers onnx onnxruntime onnxscript openvino
Run directly, or through `lecr bench encode --model M --torch-python /tmp/lecr-bench/bin/python`,
which passes the same texts, batch, length, pairs, runs and thread count it uses itself.
To measure PyTorch as an AVX2-only CPU runs it, set ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 in the environment.
"""
import argparse
import math
import os
import statistics
import tempfile
import time

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="Hugging Face model folder")
    p.add_argument("--texts", required=True, help="one input per line; the first 1,024 are used")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--max-len", type=int, default=64, help="every batch is padded to this length")
    p.add_argument("--pairs", type=int, default=32, help="pairs of the training step")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--only", default="encode,bf16,train-step,ort,ov", help="comma-separated figures")
    p.add_argument("--onednn-probe", choices=["f32", "bf16"], help=argparse.SUPPRESS)
    return p.parse_args()


class Inputs:
    """The texts, tokenized once into fixed-length batches (tokenizing is not what we time)."""

    def __init__(self, tokenizer, texts, batch, max_len):
        self.count = len(texts)
        self.batches = [
            tokenizer(texts[i:i + batch], padding="max_length", truncation=True,
                      max_length=max_len, return_tensors="np")
            for i in range(0, len(texts), batch)
        ]


def pool(hidden, mask):
    """Mean over real tokens, then unit length (sentence-transformers' mean pooling), torch."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    v = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(v, dim=1)


def pool_np(hidden, mask):
    """The same pooling on ONNX Runtime's numpy output."""
    m = mask[..., None].astype(hidden.dtype)
    v = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def sentences_per_second(encode_batch, inputs, runs):
    """Median rate over `runs` passes over every batch, after one warm-up batch."""
    encode_batch(inputs.batches[0])
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        for b in inputs.batches:
            encode_batch(b)
        rates.append(inputs.count / (time.perf_counter() - start))
    return statistics.median(rates)


def torch_encoder(model):
    @torch.inference_mode()
    def encode_batch(b):
        feeds = {k: torch.from_numpy(v) for k, v in b.items()}
        return pool(model(**feeds).last_hidden_state, feeds["attention_mask"])
    return encode_batch


def torch_bf16_encoder(model):
    @torch.inference_mode()
    def encode_batch(b):
        feeds = {k: torch.from_numpy(v) for k, v in b.items()}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hidden = model(**feeds).last_hidden_state
        return pool(hidden.float(), feeds["attention_mask"])
    return encode_batch


def torch_train_step_seconds(model, tokenizer, texts, pairs, max_len, runs, bf16=False):
    """Median seconds of one InfoNCE step (topics = first `pairs` texts, contents = the next),
    with the forward pass and the loss under bf16 autocast when `bf16`."""
    def tok(xs):
        return tokenizer(xs, padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")

    topics, contents = tok(texts[:pairs]), tok(texts[pairs:2 * pairs])
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    optimizer = torch.optim.AdamW([*model.parameters(), logit_scale], lr=2e-5, weight_decay=0.01)
    target = torch.arange(pairs)
    model.train()
    seconds = []
    for _ in range(runs + 1):  # the first step warms up and is not counted
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            t = pool(model(**topics).last_hidden_state.float(), topics["attention_mask"])
            c = pool(model(**contents).last_hidden_state.float(), contents["attention_mask"])
        logits = logit_scale.exp() * t @ c.T
        ce = torch.nn.functional.cross_entropy
        loss = 0.5 * (ce(logits, target, label_smoothing=0.1) + ce(logits.T, target, label_smoothing=0.1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seconds.append(time.perf_counter() - start)
    model.eval()
    return statistics.median(seconds[1:])


def onnx_rates(model, tokenizer, inputs, threads, runs):
    """ONNX Runtime fp32 and dynamic-int8 rates on the same batches."""
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    names = ["input_ids", "attention_mask"]
    folder = tempfile.mkdtemp(prefix="lecr-ort-")
    fp32 = os.path.join(folder, "fp32.onnx")
    int8 = os.path.join(folder, "int8.onnx")
    sample = {k: torch.from_numpy(inputs.batches[0][k][:2]) for k in names}
    torch.onnx.export(LastHidden(model).eval(), (sample["input_ids"], sample["attention_mask"]), fp32,
                      input_names=names, output_names=["hidden"], opset_version=17, dynamo=False,
                      dynamic_axes={n: {0: "batch", 1: "tokens"} for n in names + ["hidden"]})
    quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, per_channel=True)
    rates = {}
    for label, path in (("ort-fp32", fp32), ("ort-int8", int8)):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])

        def encode_batch(b, session=session):
            hidden = session.run(None, {n: b[n].astype(np.int64) for n in names})[0]
            return pool_np(hidden, b["attention_mask"])
        rates[label] = sentences_per_second(encode_batch, inputs, runs)
        print(f"kernels {label}: onnxruntime providers {session.get_providers()}")
    return rates, onnxruntime.__version__


class LastHidden(torch.nn.Module):
    """The encoder with plain tensor inputs and its last hidden state as the one output."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def rt_value(info, key):
    """A runtime-info entry of an OpenVINO op as text, or None."""
    try:
        v = info[key]
    except Exception:
        return None
    for get in (lambda x: x.astype(str), lambda x: x.value, str):
        try:
            return str(get(v))
        except Exception:
            continue
    return None


def openvino_rates(model, inputs, threads, runs):
    """OpenVINO f32 and bf16 rates on the same batches, and what each compiled model ran in."""
    import openvino as ov

    names = ["input_ids", "attention_mask"]
    sample = tuple(torch.from_numpy(inputs.batches[0][k].astype(np.int64)) for k in names)
    converted = ov.convert_model(LastHidden(model).eval(), example_input=sample)
    core = ov.Core()
    rates, kernels = {}, {}
    for label, hint in (("ov-fp32", "f32"), ("ov-bf16", "bf16")):
        compiled = core.compile_model(converted, "CPU", {
            "INFERENCE_PRECISION_HINT": hint,
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
        })
        request = compiled.create_infer_request()

        def encode_batch(b, request=request):
            out = request.infer({i: b[n].astype(np.int64) for i, n in enumerate(names)})
            hidden = next(iter(out.values()))
            return pool_np(hidden, b["attention_mask"])
        rates[label] = sentences_per_second(encode_batch, inputs, runs)
        # The precision each matrix product ran in (the runtime model's layer info).
        seen = {}
        for op in compiled.get_runtime_model().get_ops():
            info = op.get_rt_info()
            kind = rt_value(info, "layerType") or op.get_type_name()
            if kind in ("FullyConnected", "MatMul"):
                prec = rt_value(info, "runtimePrecision") or "?"
                impl = rt_value(info, "primitiveType") or "?"
                key = f"{kind} {prec} {impl}"
                seen[key] = seen.get(key, 0) + 1
        hint = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        kernels[label] = (hint.replace("<Type: '", "").replace("'>", ""), seen)
    return rates, kernels, ov.__version__


def onednn_probe(model, inputs, precision):
    """One torch batch (f32, or bf16 autocast); run under ONEDNN_VERBOSE=1 by the parent."""
    encode = torch_bf16_encoder(model) if precision == "bf16" else torch_encoder(model)
    encode(inputs.batches[0])


def onednn_kernels(a):
    """oneDNN's matmul / inner-product implementations for one torch batch of each precision,
    from its verbose log in a child process (counts of `primitive implementation` strings)."""
    import collections
    import subprocess
    import sys

    out = {}
    for precision in ("f32", "bf16"):
        env = dict(os.environ, ONEDNN_VERBOSE="1")
        cmd = [sys.executable, __file__, "--model", a.model, "--texts", a.texts,
               "--batch", str(a.batch), "--max-len", str(a.max_len), "--threads", str(a.threads),
               "--onednn-probe", precision]
        run = subprocess.run(cmd, env=env, capture_output=True, text=True)
        impls = collections.Counter()
        for line in run.stdout.splitlines():
            f = line.split(",")
            # onednn_verbose,[timestamp,]primitive,exec,cpu,<kind>,<implementation>,...
            if len(f) > 6 and "exec" in f[:4]:
                at = f.index("exec")
                if at + 3 < len(f) and f[at + 2] in ("matmul", "inner_product"):
                    impls[f"{f[at + 2]}:{f[at + 3]}"] += 1
        out[precision] = dict(impls)
    return out


def reset_peak_rss():
    """Restarts the kernel's peak-resident-memory mark (Linux), as lecr does before its step."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mib():
    """Peak resident memory since the last reset (VmHWM), in MiB; 0 where unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def main():
    a = parse_args()
    torch.set_num_threads(a.threads)
    with open(a.texts, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f][:1024]
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    model = AutoModel.from_pretrained(a.model).eval()
    inputs = Inputs(tokenizer, texts, a.batch, a.max_len)
    if a.onednn_probe:
        onednn_probe(model, inputs, a.onednn_probe)
        return
    wanted = {w for w in a.only.split(",") if w}
    print(f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
          f"{torch.get_num_threads()} threads, {len(texts)} texts, batch {a.batch}, max_len {a.max_len}")
    if "encode" in wanted or "bf16" in wanted:
        for precision, impls in onednn_kernels(a).items():
            listed = ", ".join(f"{k} x{n}" for k, n in sorted(impls.items()))
            listed = listed or "no oneDNN matmul (torch ran its own kernels)"
            print(f"kernels torch {precision} (oneDNN verbose, one batch): {listed}")
    if "encode" in wanted:
        rate = sentences_per_second(torch_encoder(model), inputs, a.runs)
        print(f"RESULT torch encode sentences_per_s={rate:.1f}")
    if "bf16" in wanted:
        rate = sentences_per_second(torch_bf16_encoder(model), inputs, a.runs)
        print(f"RESULT torch-bf16 encode sentences_per_s={rate:.1f}")
    if "train-step" in wanted:
        reset_peak_rss()
        s = torch_train_step_seconds(model, tokenizer, texts, a.pairs, a.max_len, a.runs)
        print(f"RESULT torch train-step seconds={s:.3f} pairs={a.pairs}")
        print(f"RESULT torch train-step-rss mib={peak_rss_mib():.0f}")
    if "train-step" in wanted and "bf16" in wanted:
        reset_peak_rss()
        s = torch_train_step_seconds(model, tokenizer, texts, a.pairs, a.max_len, a.runs, bf16=True)
        print(f"RESULT torch-bf16 train-step seconds={s:.3f} pairs={a.pairs}")
        print(f"RESULT torch-bf16 train-step-rss mib={peak_rss_mib():.0f}")
    if "ort" in wanted:
        rates, version = onnx_rates(model, tokenizer, inputs, a.threads, a.runs)
        for label, rate in rates.items():
            print(f"RESULT {label} encode sentences_per_s={rate:.1f} (onnxruntime {version})")
    if "ov" in wanted:
        rates, kernels, version = openvino_rates(model, inputs, a.threads, a.runs)
        for label, (hint, seen) in kernels.items():
            listed = ", ".join(f"{k} x{n}" for k, n in sorted(seen.items()))
            print(f"kernels {label}: openvino {version}, execution precision {hint}; {listed}")
        for label, rate in rates.items():
            print(f"RESULT {label} encode sentences_per_s={rate:.1f} (openvino {version})")


if __name__ == "__main__":
    main()
