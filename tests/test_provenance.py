"""The machine line every timing carries: CPU model, vector extensions and threads."""

from __future__ import annotations

import platform

from swiftstudy.demo.run import render_summary
from swiftstudy.provenance import CpuDescription, describe_cpu, describe_machine, parse_cpuinfo

# Trimmed from real /proc/cpuinfo files: two processors each, most fields dropped.
XEON_SAPPHIRE_RAPIDS = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme sse sse2 avx avx2 fma avx512f avx512dq avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme sse sse2 avx avx2 fma avx512f avx512dq avx512_bf16 amx_bf16 amx_tile amx_int8
"""
EPYC_MILAN = """\
processor\t: 0
model name\t: AMD EPYC   7B13
flags\t\t: fpu sse sse2 avx f16c avx2 bmi2 sha_ni vaes

processor\t: 1
model name\t: AMD EPYC   7B13
flags\t\t: fpu sse sse2 avx f16c avx2 bmi2 sha_ni vaes
"""
GRAVITON = """\
processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics sve
CPU implementer\t: 0x41
"""


def test_parse_cpuinfo_names_model_cpus_and_vector_extensions():
    assert parse_cpuinfo(XEON_SAPPHIRE_RAPIDS) == CpuDescription(
        "Intel(R) Xeon(R) Platinum 8480+", 2, ("AVX2", "AVX-512", "AVX-512-BF16", "AMX")
    )
    # Runs of spaces in the model name collapse; flags that are no vector extension are ignored.
    assert parse_cpuinfo(EPYC_MILAN) == CpuDescription("AMD EPYC 7B13", 2, ("AVX2",))
    graviton = parse_cpuinfo(GRAVITON)  # no model name: the platform's guess stands in
    assert graviton.cpus == 1 and graviton.extensions == ("NEON", "SVE") and graviton.model


def test_describe_machine_is_one_line_with_threads():
    line = describe_machine(3)
    assert "\n" not in line and line.endswith("3 threads")
    assert line.startswith(describe_cpu().model)
    if platform.machine().lower() in ("x86_64", "amd64") and "AMX" not in describe_cpu().extensions:
        assert "no AMX" in line


def test_the_demo_summary_names_the_machine(tmp_path):
    summary = render_summary({}, tmp_path, 90.0)
    assert f"Machine: {describe_machine()}." in summary.splitlines()
