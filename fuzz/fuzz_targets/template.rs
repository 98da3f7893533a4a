//! Any template text rendered with a few variables: Ok or an error, never a panic or a hang.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let vars: BTreeMap<String, String> = [("IP", "10.72.84.160"), ("ETCD2", "10.72.84.161")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    if let Ok(out) = kbuild::render::render_traced("fuzz.j2", text, &vars) {
        let _ = kbuild::render::check_format(
            "fuzz.j2",
            "/etc/x",
            &out,
            text,
            &vars,
            kbuild::recipe::FileFormat::Env,
        );
    }
});
