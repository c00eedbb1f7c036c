fn main() {
    print!("{}", tenantry::api::crds_yaml().expect("CRDs serialize"));
}
