// Versions pinned; built with Android Studio / Gradle 8.14.4 on a machine with the Android SDK.
// Kotlin 2.4: litertlm-android 0.17+ carries Kotlin 2.4 metadata, which older compilers cannot read.
// AGP 8.13.2 (the last 8.x) keeps the separate Kotlin plugin; AGP 9 has built-in Kotlin instead.
plugins {
    id("com.android.application") version "8.13.2" apply false
    id("org.jetbrains.kotlin.android") version "2.4.20" apply false
    id("org.jetbrains.kotlin.jvm") version "2.4.20" apply false
}
