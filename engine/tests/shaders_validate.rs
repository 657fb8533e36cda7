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
    // The shared functions parse and validate on their own too (they have no entry point).
    for entry in std::fs::read_dir(dir.join("lib")).unwrap() {
        let path = entry.unwrap().path();
        let source = std::fs::read_to_string(&path).unwrap();
        let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{path:?} does not validate: {e}"));
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
