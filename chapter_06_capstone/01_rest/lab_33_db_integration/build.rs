// `sqlx::migrate!` embeds the files of src/migrations when the binary is
// compiled; without this line, editing only a .sql file would not rebuild
// it, and the tests would run the old schema.
fn main() {
    println!("cargo:rerun-if-changed=src/migrations");
}
