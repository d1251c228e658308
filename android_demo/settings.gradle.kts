// The mlfs_edge on-device demo: one app module. The C++ engine it links over JNI lives outside this
// folder, in the repository's csrc/ (see app/src/main/cpp/CMakeLists.txt).
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral() // org.pytorch:executorch-android and its fbjni / soloader dependencies
    }
}

rootProject.name = "mlfs-edge-demo"
include(":app")
