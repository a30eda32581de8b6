// Pure Kotlin: no Android dependency, so the same sources compile with plain kotlinc
// (core/run_tests.sh, run by `make test`) and in the app.
import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins { id("org.jetbrains.kotlin.jvm") }

java {
    sourceCompatibility = JavaVersion.VERSION_17
    targetCompatibility = JavaVersion.VERSION_17
}

kotlin {
    compilerOptions { jvmTarget.set(JvmTarget.JVM_17) }
}

dependencies {
    testImplementation("junit:junit:4.13.2")
}

tasks.test {
    systemProperty("gemmaedge.vectors", rootProject.file("test_vectors").path)
}
