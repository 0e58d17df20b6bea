//! The commands about the host rather than a suite: `doctor` and `image build`.

use bootgate::{doctor, image, runner};

use super::args::DoctorArgs;
use super::exit::{fail, Exit};

pub fn doctor(args: DoctorArgs) -> Exit {
    let mut stdout = std::io::stdout();
    let healthy = match &args.image {
        Some(image) => doctor::image::run(
            image,
            args.accel,
            bootgate::confine::PathPolicy::allowing_outside(args.allow_outside_paths),
            &mut stdout,
        ),
        None => doctor::run(&mut stdout, runner::build_sandbox::probe_fresh()),
    };
    // Each failed check already printed what to do; a host that is not ready is
    // infrastructure trouble, as a run on it would be.
    if healthy {
        Exit::Pass
    } else {
        Exit::Infra
    }
}

pub fn image_build(name: &str, force: bool) -> Exit {
    let Some(built_in) = image::builtin::find(name) else {
        return fail(&image::ImageError::Unknown(name.to_string()), Exit::Usage);
    };
    let mut notify = |text: &str| eprintln!("bootgate: {text}");
    match image::builtin::build(built_in, force, &mut notify) {
        Ok(manifest) => {
            println!("image: {}", manifest.display());
            if let Some(info) = image::kernel::build_info(&manifest) {
                if let Some(kernel) = info.get("kernel_version").and_then(|v| v.as_str()) {
                    println!("kernel: {kernel}");
                }
                match info.get("headers_dir").and_then(|v| v.as_str()) {
                    Some(dir) => println!("headers: {dir}"),
                    None => println!(
                        "headers: not installed ({})",
                        info.get("headers_note")
                            .and_then(|v| v.as_str())
                            .unwrap_or("see build-info.json")
                    ),
                }
            }
            Exit::Pass
        }
        // The name is a built-in one, so whatever went wrong is the build's: `--help`
        // lists "image build failed" under infrastructure errors.
        Err(e) => fail(&e, Exit::Infra),
    }
}
