//! Every WGSL file parses and validates with naga, with no GPU adapter needed, and is registered
//! with the engine (so the binary embeds it and a launcher can find it).
#![cfg(feature = "gpu")]

use std::path::Path;

fn validate(name: &str, source: &str) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}.wgsl does not parse:\n{}", e.emit_to_string(source)));
    let mut validator =
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
    validator
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}.wgsl does not validate:\n{}", e.emit_to_string(source)));
    assert!(!module.entry_points.is_empty(), "{name}.wgsl has no entry point");
    for ep in &module.entry_points {
        assert_eq!(ep.stage, naga::ShaderStage::Compute, "{name}::{} is not a compute shader", ep.name);
    }
}

#[test]
fn every_wgsl_file_parses_and_validates_with_naga() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shaders");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wgsl") {
            let name = path.file_stem().unwrap().to_str().unwrap().to_string();
            let registered = engine::gpu::shaders::source(&name)
                .unwrap_or_else(|| panic!("shaders/{name}.wgsl is not registered in engine/src/gpu/shaders.rs"));
            // What runs is the file plus the shared functions of shaders/lib/ it calls.
            assert!(
                registered.starts_with(&std::fs::read_to_string(&path).unwrap()),
                "{name}: source differs from its file"
            );
            validate(&name, registered);
            seen += 1;
        }
    }
    assert_eq!(seen, engine::gpu::shaders::SHADERS.len(), "a registered shader has no file in shaders/");
    // The shared functions are validated where they run: each is appended to at least one of the
    // sources validated above (some use their kernels' bindings, so they do not stand alone).
    for entry in std::fs::read_dir(dir.join("lib")).unwrap() {
        let path = entry.unwrap().path();
        let source = std::fs::read_to_string(&path).unwrap();
        assert!(
            engine::gpu::shaders::SHADERS.iter().any(|(_, s)| s.contains(&source)),
            "{path:?} is appended to no registered shader"
        );
    }
}

#[test]
fn every_wgsl_file_starts_with_a_header_that_names_its_launcher() {
    for (name, source) in engine::gpu::shaders::SHADERS {
        let header: String = source.lines().take_while(|l| l.starts_with("//")).collect::<Vec<_>>().join("\n");
        assert!(
            header.lines().count() >= 5,
            "{name}.wgsl needs a header comment (what, layout, algorithm, napkin math)"
        );
        assert!(header.contains("Launcher:"), "{name}.wgsl: the header should name its launcher");
        assert!(header.to_lowercase().contains("napkin math"), "{name}.wgsl: the header should give napkin math");
    }
}

#[test]
fn every_wgsl_header_says_whether_its_indexing_is_proved_in_bounds_and_why() {
    use engine::gpu::shaders::{bounds_line, provably_in_bounds};
    for (name, source) in engine::gpu::shaders::SHADERS {
        let line = bounds_line(source).unwrap_or_else(|| panic!("{name}.wgsl: the header needs a `Bounds:` line"));
        assert!(
            line.starts_with("checked.") || line.starts_with("unchecked."),
            "{name}.wgsl: `Bounds: checked.` or `Bounds: unchecked.`, then why; got {line:?}"
        );
        // The reason: at least a sentence after the verdict.
        let header: String = source.lines().take_while(|l| l.starts_with("//")).collect::<Vec<_>>().join("\n");
        let after = &header[header.find("Bounds:").unwrap()..];
        assert!(after.len() > 80, "{name}.wgsl: say why the indexing is (or is not) proved in bounds");
        assert_eq!(provably_in_bounds(name), line.starts_with("unchecked."), "{name}");
    }
    // Every kernel of a training step is proved (gather's one indirect read after the launcher checks
    // the indices on the host, where they come from).
    for name in ["matmul", "elementwise", "adamw", "attention", "gather", "layernorm", "loss", "reduce"] {
        assert!(provably_in_bounds(name), "{name}");
    }
    assert!(!provably_in_bounds("no such shader"));
}

#[test]
fn every_wgsl_header_says_whether_its_loops_are_proved_finite_and_why() {
    use engine::gpu::shaders::{loops_line, provably_finite, trusted_checks};
    for (name, source) in engine::gpu::shaders::SHADERS {
        let line = loops_line(source).unwrap_or_else(|| panic!("{name}.wgsl: the header needs a `Loops:` line"));
        assert!(
            line.starts_with("finite.") || line.starts_with("bounded."),
            "{name}.wgsl: `Loops: finite.` or `Loops: bounded.`, then why; got {line:?}"
        );
        let header: String = source.lines().take_while(|l| l.starts_with("//")).collect::<Vec<_>>().join("\n");
        let after = &header[header.find("Loops:").unwrap()..];
        let body: String = source.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
        let loops = ["for (", "loop {", "while "].iter().map(|k| body.matches(k).count()).sum::<usize>();
        if after.starts_with("Loops: finite. It has no loop.") {
            assert_eq!(loops, 0, "{name}.wgsl: the header says it has no loop");
        } else {
            assert!(after.len() > 80, "{name}.wgsl: say why every loop ends (or that it has none)");
        }
        assert_eq!(provably_finite(name), line.starts_with("finite."), "{name}");
        // What the context drops: the counter of finite shaders' loops, the bounds checks of
        // unchecked ones; each switch puts back what it names, MAE_GPU_BOUNDS_CHECKS everything.
        let checks = trusted_checks(name, false, false).expect("every shader drops a check");
        assert_eq!(checks.force_loop_bounding, !provably_finite(name), "{name}");
        assert!(checks.int_div_checks, "{name}: integer-division checks stay");
        let loops_back = trusted_checks(name, false, true).expect("the bounds checks stay dropped");
        assert!(loops_back.force_loop_bounding && !loops_back.bounds_checks, "{name}");
        assert!(trusted_checks(name, true, false).is_none(), "{name}: MAE_GPU_BOUNDS_CHECKS restores every check");
    }
    // Every kernel of a training step runs without the loop counter.
    for name in ["matmul", "matmul_large", "elementwise", "adamw", "attention", "gather", "layernorm", "loss", "reduce"]
    {
        assert!(provably_finite(name), "{name}");
    }
    assert!(!provably_finite("no such shader"));
    assert!(trusted_checks("no such shader", false, false).is_none());
}

/// The SPIR-V that wgpu's Vulkan backend would make of `entry` in shader `name` with `constants`.
fn spirv_of(name: &str, entry: &str, constants: &[(&str, f64)]) -> Vec<u32> {
    let source = engine::gpu::shaders::source(name).unwrap();
    let module = naga::front::wgsl::parse_str(source).unwrap();
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .unwrap();
    let constants = constants.iter().map(|&(k, v)| (k.to_string(), v)).collect();
    let (module, info) = naga::back::pipeline_constants::process_overrides(
        &module,
        &info,
        Some((naga::ShaderStage::Compute, entry)),
        &constants,
    )
    .unwrap_or_else(|e| panic!("{name} with {constants:?}: {e}"));
    let options = naga::back::spv::Options { lang_version: (1, 3), ..Default::default() };
    let pipeline =
        naga::back::spv::PipelineOptions { shader_stage: naga::ShaderStage::Compute, entry_point: entry.into() };
    naga::back::spv::write_vec(&module, &info, &options, Some(&pipeline))
        .unwrap_or_else(|e| panic!("{name} with {constants:?} does not compile to SPIR-V: {e}"))
}

/// The capabilities a SPIR-V module declares (`OpCapability`, opcode 17).
fn capabilities(words: &[u32]) -> Vec<u32> {
    let mut caps = Vec::new();
    let mut at = 5; // past the header
    while at < words.len() {
        let (count, opcode) = ((words[at] >> 16) as usize, words[at] & 0xffff);
        if opcode == 17 {
            caps.push(words[at + 1]);
        }
        at += count.max(1);
    }
    caps
}

#[test]
fn the_tensor_core_product_compiles_to_spirv_for_every_transpose_without_subgroup_operations() {
    // lavapipe has no cooperative matrices, so CI cannot run this kernel (the device run does):
    // here naga turns every specialisation into SPIR-V as wgpu would. And it must declare no
    // subgroup capability: NVIDIA's driver is reported to crash compiling a module that mixes
    // GroupNonUniform* with CooperativeMatrixKHR (kvark/blade#333).
    const COOPERATIVE_MATRIX_KHR: u32 = 6022;
    const GROUP_NON_UNIFORM: std::ops::RangeInclusive<u32> = 61..=68;
    for trans_a in [0.0, 1.0] {
        for trans_b in [0.0, 1.0] {
            // The epilogues: none, GELU, GELU's derivative.
            for (gelu, gelu_grad) in [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)] {
                let words = spirv_of(
                    "matmul_coop",
                    "matmul_coop",
                    &[("TRANS_A", trans_a), ("TRANS_B", trans_b), ("GELU", gelu), ("GELU_GRAD", gelu_grad)],
                );
                let caps = capabilities(&words);
                assert!(caps.contains(&COOPERATIVE_MATRIX_KHR), "no CooperativeMatrixKHR among {caps:?}");
                assert!(
                    !caps.iter().any(|c| GROUP_NON_UNIFORM.contains(c)),
                    "a subgroup capability among {caps:?} next to cooperative matrices"
                );
            }
        }
    }
}
