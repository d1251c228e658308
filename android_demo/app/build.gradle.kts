plugins {
    id("com.android.application")
}

android {
    namespace = "org.mlfsedge.demo"
    compileSdk = 35
    ndkVersion = "27.0.12077973" // the Android Gradle plugin 8.7 default (r27 LTS)

    defaultConfig {
        applicationId = "org.mlfsedge.demo"
        minSdk = 24
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
        ndk {
            // Phones, and the x86_64 emulator. ExecuTorch's AAR ships the same two ABIs.
            abiFilters += listOf("arm64-v8a", "x86_64")
        }
        externalNativeBuild {
            cmake {
                // The JNI bridge is C-only at its edge: a private static libc++ is enough.
                arguments += listOf("-DANDROID_STL=c++_static", "-DCMAKE_BUILD_TYPE=Release")
            }
        }
    }

    externalNativeBuild {
        cmake {
            // libmlfs_jni.so; this CMakeLists.txt pulls the engine in from the repository's csrc/.
            path = file("src/main/cpp/CMakeLists.txt")
            version = "3.22.1"
        }
    }

    buildTypes {
        release {
            isMinifyEnabled = false
            signingConfig = signingConfigs.getByName("debug") // a demo: installable without a release key
        }
    }

    compileOptions {
        // Java 8 language and library level: what tests/test_android_app.py compiles the sources with
        // (javac --release 8), close to what minSdk 24 offers without desugaring.
        sourceCompatibility = JavaVersion.VERSION_1_8
        targetCompatibility = JavaVersion.VERSION_1_8
    }

    androidResources {
        // Models are copied out of the APK once (Module.load and the engine's mmap need a file path);
        // stored uncompressed, that copy is a plain read.
        noCompress += listOf("pte", "mlfs")
    }
}

dependencies {
    // The ExecuTorch Java API and runtime (XNNPACK backend included) matching the Python side's
    // executorch==1.5.1 that wrote the .pte (constraints.txt); fbjni and soloader come with it.
    implementation("org.pytorch:executorch-android:1.5.1")
}

// ./gradlew copyModelAssets -PpteManifest=... -PmlfsInt8=... -PmlfsFp16=...
// (the same as running scripts/copy_assets.sh by hand).
tasks.register<Exec>("copyModelAssets") {
    group = "mlfs-edge"
    description = "Copy the .pte + manifest + vocab and the int8/fp16 .mlfs files into src/main/assets"
    val manifest = providers.gradleProperty("pteManifest")
    val int8 = providers.gradleProperty("mlfsInt8")
    val fp16 = providers.gradleProperty("mlfsFp16")
    doFirst {
        if (!manifest.isPresent || !int8.isPresent || !fp16.isPresent) {
            throw GradleException("give -PpteManifest=NAME.json -PmlfsInt8=FILE.mlfs -PmlfsFp16=FILE.mlfs")
        }
    }
    commandLine(
        "bash", rootProject.file("scripts/copy_assets.sh").path,
        manifest.getOrElse(""), int8.getOrElse(""), fp16.getOrElse(""), file("src/main/assets").path,
    )
}
