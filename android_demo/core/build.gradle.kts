// Pure Kotlin: no Android dependency, so the same sources compile with plain kotlinc
// (core/run_tests.sh, run by `make test`) and in the app.
plugins { id("org.jetbrains.kotlin.jvm") }

kotlin { jvmToolchain(17) }

dependencies {
    testImplementation("junit:junit:4.13.2")
}

tasks.test {
    systemProperty("gemmaedge.vectors", rootProject.file("test_vectors").path)
}
